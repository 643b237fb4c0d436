package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Front caches keep public pages that name a commit for a year. When a
// repository stops being public (made private, deleted, renamed) or a
// force-push drops commits, those copies must go: every response of a
// repository carries Surrogate-Key: repo-ID, and a purger asks each
// cache given with -purge to drop every object with that key (with
// ../deploy/forged.vcl, a PURGE request that bans them).

// surrogateKey is a repository's key in front caches.
func surrogateKey(repoID int64) string { return "repo-" + strconv.FormatInt(repoID, 10) }

// purger sends purges to the front caches. It is safe for concurrent
// use.
type purger struct {
	urls   []string
	client *http.Client
	log    *slog.Logger
	wg     sync.WaitGroup
}

// purge asks every cache to drop the repository's objects, in the
// background: each cache is tried three times, a few seconds apart.
func (p *purger) purge(repoID int64, why string) {
	for _, u := range p.urls {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			var err error
			for attempt := range 3 {
				if attempt > 0 {
					time.Sleep(time.Duration(attempt) * 2 * time.Second)
				}
				if err = p.send(u, repoID); err == nil {
					return
				}
			}
			p.log.Error("purge failed: a front cache may still serve the repository's old pages", "cache", u, "repo_id", repoID, "why", why, "err", err)
		}()
	}
}

func (p *purger) send(u string, repoID int64) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
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

// wait waits for the purges under way (at shutdown).
func (p *purger) wait() { p.wg.Wait() }
