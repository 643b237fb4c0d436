package timebox_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/forgekit/forgekit/timebox"
)

func serve(t *testing.T, h *timebox.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
	})
	return srv
}

func TestHandlerStreams(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	h := &timebox.Handler{Timeout: time.Minute, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "first\n")
		require.NoError(t, http.NewResponseController(w).Flush())
		require.NoError(t, http.NewResponseController(w).SetWriteDeadline(time.Now().Add(time.Minute)))
		<-release // the client must see "first" before the handler ends
		io.WriteString(w, "second\n")
	})}
	srv := serve(t, h)
	resp, err := http.Get(srv.URL)
	require.NoError(t, err)
	defer resp.Body.Close()
	buf := make([]byte, 6)
	_, err = io.ReadFull(resp.Body, buf)
	require.NoError(t, err)
	assert.Equal(t, "first\n", string(buf))
	close(release)
	rest, _ := io.ReadAll(resp.Body)
	assert.Equal(t, "second\n", string(rest))
	assert.Zero(t, h.Stats().Expired)
}

func TestHandler503BeforeFirstByte(t *testing.T) {
	t.Parallel()
	var hookSawLiveContext atomic.Bool
	var causeSeen atomic.Value
	h := &timebox.Handler{
		Timeout:    30 * time.Millisecond,
		RetryAfter: 7 * time.Second,
		OnExpire: func(r *http.Request, e *timebox.Expired) {
			hookSawLiveContext.Store(r.Context().Err() == nil)
		},
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-From-Handler", "yes")
			<-r.Context().Done()
			causeSeen.Store(context.Cause(r.Context()))
			_, err := io.WriteString(w, "too late")
			assert.ErrorIs(t, err, timebox.ErrHandlerTimeout)
		}),
	}
	srv := serve(t, h)
	req, _ := http.NewRequest("GET", srv.URL+"/slow", nil)
	req.Header.Set("X-Request-Id", "req-42")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.Equal(t, "7", resp.Header.Get("Retry-After"))
	assert.Equal(t, "req-42", resp.Header.Get("X-Request-Id"))
	assert.Empty(t, resp.Header.Get("X-From-Handler"))
	assert.Contains(t, string(body), "req-42")
	assert.True(t, hookSawLiveContext.Load(), "OnExpire runs before the context is cancelled")
	require.Eventually(t, func() bool { return causeSeen.Load() != nil }, 10*time.Second, 5*time.Millisecond)
	assert.ErrorIs(t, causeSeen.Load().(error), timebox.ErrExpired)
	s := h.Stats()
	assert.Equal(t, int64(1), s.Expired)
	assert.Equal(t, int64(1), s.Refused)
}

func TestHandlerAbortsStartedStream(t *testing.T) {
	t.Parallel()
	writeErr := make(chan error, 1)
	h := &timebox.Handler{Timeout: 50 * time.Millisecond, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		for { // ignores its context; only a failing write stops it
			if _, err := io.WriteString(w, strings.Repeat("x", 1024)); err != nil {
				writeErr <- err
				return
			}
			http.NewResponseController(w).Flush()
			time.Sleep(5 * time.Millisecond)
		}
	})}
	srv := serve(t, h)
	resp, err := http.Get(srv.URL)
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	_, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Error(t, err, "the client must see the stream cut, not a clean end")
	assert.Error(t, <-writeErr)
	assert.Equal(t, int64(1), h.Stats().Aborted)
}

func TestHandlerIgnoringContext(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	h := &timebox.Handler{Timeout: 30 * time.Millisecond, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release // ignores ctx entirely
	})}
	srv := serve(t, h)
	resp, err := http.Get(srv.URL)
	require.NoError(t, err)
	io.ReadAll(resp.Body)
	resp.Body.Close()
	// The 503 arrived while the handler still runs.
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	close(release)
}

func TestHandlerDetach(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	done := make(chan struct{})
	h := &timebox.Handler{Timeout: 20 * time.Millisecond, Grace: 10 * time.Millisecond, Detach: 20 * time.Millisecond,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			defer close(done)
			<-release
			_, err := io.WriteString(w, "after detach")
			assert.True(t, errors.Is(err, timebox.ErrHandlerTimeout))
		})}
	srv := serve(t, h)
	resp, err := http.Get(srv.URL)
	require.NoError(t, err)
	io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	require.Eventually(t, func() bool { return h.Stats().Detached == 1 }, 10*time.Second, 5*time.Millisecond)
	close(release)
	<-done
	require.Eventually(t, func() bool { return h.Stats().Detached == 0 }, 10*time.Second, 5*time.Millisecond)
	assert.Equal(t, int64(1), h.Stats().DetachedTotal)
}

func TestHandlerPerRoute(t *testing.T) {
	t.Parallel()
	h := &timebox.Handler{
		Timeout: time.Minute,
		TimeoutFor: func(r *http.Request) time.Duration {
			switch r.URL.Path {
			case "/fast":
				return 20 * time.Millisecond
			case "/unbounded":
				return -1
			}
			return 0
		},
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if _, ok := r.Context().Deadline(); !ok {
				io.WriteString(w, "no limit")
				return
			}
			select {
			case <-r.Context().Done():
			case <-time.After(200 * time.Millisecond):
				io.WriteString(w, "done")
			}
		}),
	}
	srv := serve(t, h)
	for _, tc := range []struct {
		name, path string
		code       int
		body       string
	}{
		{name: "short route", path: "/fast", code: 503},
		{name: "default limit", path: "/other", code: 200, body: "done"},
		{name: "no limit", path: "/unbounded", code: 200, body: "no limit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := http.Get(srv.URL + tc.path)
			require.NoError(t, err)
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			assert.Equal(t, tc.code, resp.StatusCode)
			if tc.body != "" {
				assert.Equal(t, tc.body, string(b))
			}
		})
	}
}

func TestHandlerPanickingHook(t *testing.T) {
	t.Parallel()
	h := &timebox.Handler{
		Timeout:  20 * time.Millisecond,
		OnExpire: func(*http.Request, *timebox.Expired) { panic("hook bug") },
		Handler:  http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }),
	}
	srv := serve(t, h)
	resp, err := http.Get(srv.URL)
	require.NoError(t, err)
	io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
}

// TestHandlerRefuseAndRoute: the answer to an expired request can be the
// application's own, and the expiry names the route the application
// gives, also outside a ServeMux.
func TestHandlerRefuseAndRoute(t *testing.T) {
	t.Parallel()
	var name atomic.Value
	h := &timebox.Handler{
		Timeout: 20 * time.Millisecond,
		Route:   func(r *http.Request) string { return "/items/{id}" },
		Refuse: func(w http.ResponseWriter, r *http.Request, e *timebox.Expired) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, `{"message":"took longer than %v"}`, e.Limit)
		},
		OnExpire: func(r *http.Request, e *timebox.Expired) { name.Store(e.Name) },
		Handler:  http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }),
	}
	srv := serve(t, h)
	req, _ := http.NewRequest("GET", srv.URL+"/items/7", nil)
	req.Header.Set("X-Request-Id", "req-7")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	assert.Equal(t, `{"message":"took longer than 20ms"}`, string(body))
	assert.Equal(t, "req-7", resp.Header.Get("X-Request-Id"))
	assert.NotEmpty(t, resp.Header.Get("Retry-After"))
	assert.Equal(t, "/items/{id}", name.Load())
	assert.Equal(t, int64(1), h.Stats().Refused)
}
