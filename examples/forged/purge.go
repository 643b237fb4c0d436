package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
)

// Front caches keep public pages that name a commit for a year. When a
// repository stops being public (made private, deleted, renamed) or a
// force-push drops commits, those copies must go: every response of a
// repository carries Surrogate-Key: repo-ID, and a purger asks each
// cache given with -purge to drop every object with that key (with
// ../deploy/forged.vcl, a PURGE request that bans them).

// surrogateKey is a repository's key in front caches.
func surrogateKey(repoID int64) string { return "repo-" + strconv.FormatInt(repoID, 10) }

// purger sends purges to the front caches. A purge is a job of the
// queue per cache (purgeJob), retried with backoff, so that one a cache
// missed while it restarted, or one this process was stopped before
// sending, is sent by the next worker. It is safe for concurrent use.
type purger struct {
	urls   []string
	client *http.Client
	log    *slog.Logger

	// enqueue queues a purge (the queue's insertion, set before use).
	enqueue func(ctx context.Context, a purgeArgs) error
}

// purge queues the purges of the repository's objects, one per cache.
// A purge it could not queue is logged, and its error returned.
func (p *purger) purge(ctx context.Context, repoID int64, why string) error {
	var errs []error
	for _, u := range p.urls {
		if err := p.enqueue(ctx, purgeArgs{RepoID: repoID, Cache: u, Why: why}); err != nil {
			p.log.Error("purge not queued: a front cache may still serve the repository's old pages", "cache", u, "repo_id", repoID, "why", why, "err", err)
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (p *purger) send(ctx context.Context, u string, repoID int64) error {
	req, err := http.NewRequestWithContext(ctx, "PURGE", u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Surrogate-Key", surrogateKey(repoID))
	res, err := p.client.Do(req)
	if err != nil {
		return err
	}
	res.Body.Close()
	if res.StatusCode >= 300 {
		return fmt.Errorf("PURGE %s: %s", u, res.Status)
	}
	return nil
}
