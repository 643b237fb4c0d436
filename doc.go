// Package forgekit is the root of a module of building blocks for
// code-hosting sites ("forges"), and of the reference forge assembled
// from them. The root package holds no code; each lesson of forges that
// ran in production is its own package, which an application can take
// alone:
//
//   - gitproto: Git smart HTTP as an http.Handler (clone, fetch, push;
//     protocol v0, v1 and v2; authorization and push-policy hooks;
//     admission control; pack and ref-advertisement caches), with the git
//     binary as engine and go-git as a pure-Go fallback.
//   - viewcache: a cache of rendered page fragments in process memory
//     over memcached, with stampede control and dependency invalidation.
//   - counting: conflict-free view counters batched into SQLite, with
//     "most viewed" queries.
//   - timebox: time limits that fail in a controlled way: deadlines with
//     causes, budgets, subprocess kill, HTTP middleware.
//   - slowlog: stack traces of requests still running past a threshold,
//     and on-demand profiling of one request.
//   - forge: the domain (repositories on disk, users, tokens, access,
//     browsing, archives, maintenance), built on the packages above.
//   - examples/forged: the reference server wiring all of it together.
//
// The leaf packages (gitproto, viewcache, counting, timebox, slowlog)
// import none of each other; forge may use them; examples wire
// everything.
package forgekit
