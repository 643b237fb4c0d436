package gitproto

import (
	"context"
	"net/http"
)

// Op is what a request wants to do with a repository.
type Op int

// The operations an Authorizer decides on.
const (
	Read  Op = iota + 1 // info/refs and POST for upload-pack, dumb HTTP
	Write               // info/refs and POST for receive-pack
)

func (o Op) String() string {
	switch o {
	case Read:
		return "read"
	case Write:
		return "write"
	}
	return "unknown"
}

// Authorizer decides whether a request may perform op on the repository
// called repo (the name from the URL, which may not exist yet when a push
// could create it). It returns the principal to record (empty for
// anonymous) or an error: one wrapping ErrUnauthorized asks for
// credentials (401 with WWW-Authenticate), ErrForbidden gives 403, and
// ErrNotFound gives 404 so that a private repository looks like a missing
// one. Any other error is a 500.
//
// To allow anonymous reads but authenticated writes, return ("", nil) for
// Read without credentials and ErrUnauthorized for Write without them.
type Authorizer interface {
	Authorize(r *http.Request, repo string, op Op) (principal string, err error)
}

// A ContextAuthorizer is an Authorizer whose decision comes with a
// context for the rest of the request. Handler calls AuthorizeContext
// instead of Authorize when the Authorizer has it, and runs the rest of
// the request, OnMissingRepo, PreReceive and PostReceive included, with
// the context returned (nil keeps the request's): what the decision
// loaded (a repository's metadata, the principal's rights) need not be
// loaded again by the hooks of the same request. The context must be
// derived from r.Context().
type ContextAuthorizer interface {
	Authorizer
	AuthorizeContext(r *http.Request, repo string, op Op) (ctx context.Context, principal string, err error)
}

// AuthorizerFunc adapts a function to the Authorizer interface.
type AuthorizerFunc func(r *http.Request, repo string, op Op) (string, error)

// Authorize calls f(r, repo, op).
func (f AuthorizerFunc) Authorize(r *http.Request, repo string, op Op) (string, error) {
	return f(r, repo, op)
}

// anonymousRead is the Authorizer used when Handler.Authorizer is nil.
func anonymousRead(r *http.Request, repo string, op Op) (string, error) {
	if op == Read {
		return "", nil
	}
	return "", ErrForbidden
}
