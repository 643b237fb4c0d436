package main

import (
	"strings"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/time/rate"
)

// loginLimiter slows password guessing on every path that checks a
// password (web sign-in, git over HTTP, the password change form): per
// client address and per account, a burst of attempts, then one every
// loginEvery. An attempt takes its tokens before the password is checked
// (so that concurrent guesses cannot all pass the check), and gives them
// back if it succeeds or if the password could not be judged (a
// database outage is nobody's failed login).
//
// So that guesses from everywhere cannot lock the real user out of their
// account, the account's limit does not apply from an address the user
// has signed in from recently: a flood of guesses spends the account's
// tokens, not the ones of the places its owner signs in from.
//
// The limiters and trusted addresses of the most recent keys are kept
// (bounded memory); several instances each keep their own. A
// loginLimiter is safe for concurrent use.
type loginLimiter struct {
	buckets *lru.Cache[string, *loginBucket]
	trusted *lru.Cache[string, time.Time] // "account|address" → last success
}

// loginBucket is one key's limit: its failures spend the limiter's
// tokens; attempts under way hold one each until they end.
type loginBucket struct {
	mu       sync.Mutex // guards lim's use and inflight
	lim      *rate.Limiter
	inflight int
}

const (
	loginBurst = 10
	loginEvery = 6 * time.Second
	// loginTrust is how long an address a user signed in from stays
	// exempt from their account's limit.
	loginTrust = 30 * 24 * time.Hour
)

func newLoginLimiter() *loginLimiter {
	c, _ := lru.New[string, *loginBucket](10000)
	t, _ := lru.New[string, time.Time](10000)
	return &loginLimiter{buckets: c, trusted: t}
}

func (l *loginLimiter) bucket(key string) *loginBucket {
	b, found := l.buckets.Get(key)
	if !found {
		b = &loginBucket{lim: rate.NewLimiter(rate.Every(loginEvery), loginBurst)}
		if prev, ok, _ := l.buckets.PeekOrAdd(key, b); ok {
			b = prev
		}
	}
	return b
}

// loginAttempt is one attempt's hold on its buckets.
type loginAttempt struct {
	l             *loginLimiter
	account, addr string
	held          []*loginBucket
}

// begin starts an attempt for account ("" for a token login, which
// guesses no account's password) from addr. It returns false, holding
// nothing, when either limit has no attempt left once the attempts under
// way are counted.
func (l *loginLimiter) begin(addr, account string) (*loginAttempt, bool) {
	account = strings.ToLower(account)
	keys := []string{"ip:" + addr}
	if account != "" && !l.isTrusted(account, addr) {
		keys = append(keys, "user:"+account)
	}
	a := &loginAttempt{l: l, account: account, addr: addr}
	now := time.Now()
	for _, k := range keys {
		b := l.bucket(k)
		b.mu.Lock()
		ok := b.lim.TokensAt(now)-float64(b.inflight) >= 1
		if ok {
			b.inflight++
		}
		b.mu.Unlock()
		if !ok {
			a.end(false)
			return nil, false
		}
		a.held = append(a.held, b)
	}
	return a, true
}

func (l *loginLimiter) isTrusted(account, addr string) bool {
	at, ok := l.trusted.Get(account + "|" + addr)
	return ok && time.Since(at) < loginTrust
}

// failed spends a token of each bucket.
func (a *loginAttempt) failed() { a.end(true) }

// succeeded spends nothing and trusts the address for the account.
func (a *loginAttempt) succeeded() {
	a.end(false)
	if a.account != "" {
		a.l.trusted.Add(a.account+"|"+a.addr, time.Now())
	}
}

// undecided spends nothing: the password was not judged.
func (a *loginAttempt) undecided() { a.end(false) }

func (a *loginAttempt) end(spend bool) {
	now := time.Now()
	for _, b := range a.held {
		b.mu.Lock()
		b.inflight--
		if spend {
			b.lim.ReserveN(now, 1) // into debt if need be: later attempts wait longer
		}
		b.mu.Unlock()
	}
	a.held = nil
}
