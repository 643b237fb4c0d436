package forge_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/forgekit/forgekit/forge"
	"github.com/forgekit/forgekit/internal/testenv"
)

func TestWebhooksOnPush(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	var calls atomic.Int32
	got := make(chan forge.PushEvent, 1)
	hook := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.Header.Get(forge.SignatureHeader) != forge.Sign("s3cret", body) {
			rw.WriteHeader(http.StatusUnauthorized)
			return
		}
		if calls.Add(1) <= 2 { // fail twice: the deliverer retries
			rw.WriteHeader(http.StatusBadGateway)
			return
		}
		var ev forge.PushEvent
		json.Unmarshal(body, &ev)
		got <- ev
	}))
	defer hook.Close()
	info, err := w.f.Meta.RepoInfo(ctx, "owner", "public")
	require.NoError(t, err)
	h, err := w.f.AddWebhook(ctx, info.ID, hook.URL, "s3cret")
	require.NoError(t, err)
	w.f.Deliverer = &forge.Deliverer{Meta: w.f.Meta, Backoff: 10 * time.Millisecond, AllowPrivate: true}
	defer w.f.Deliverer.Close()
	var mu sync.Mutex
	var heard []forge.PushEvent
	w.f.OnPush = append(w.f.OnPush, func(ctx context.Context, ev forge.PushEvent) {
		mu.Lock()
		defer mu.Unlock()
		heard = append(heard, ev)
	})

	w.pushAsWriter(t, 2)

	select {
	case ev := <-got:
		assert.Equal(t, "owner/public", ev.Repo)
		assert.Equal(t, "writer", ev.Pusher)
		require.Len(t, ev.Updates, 1)
		assert.Equal(t, "refs/heads/main", ev.Updates[0].Ref)
	case <-time.After(20 * time.Second):
		t.Fatal("no delivery")
	}
	mu.Lock()
	assert.Len(t, heard, 1)
	mu.Unlock()
	require.Eventually(t, func() bool {
		d, err := w.f.Meta.Deliveries(ctx, h.ID, 10)
		return err == nil && len(d) == 1 && d[0].Attempts == 3 && d[0].Status == 200 && !d[0].DeliveredAt.IsZero()
	}, 10*time.Second, 10*time.Millisecond, "the log shows three attempts and the success")
	hook.Client().CloseIdleConnections()
}

func TestWebhookGivesUp(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	hook := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) { rw.WriteHeader(500) }))
	defer hook.Close()
	info, _ := w.f.Meta.RepoInfo(ctx, "owner", "public")
	h, err := w.f.AddWebhook(ctx, info.ID, hook.URL, "k")
	require.NoError(t, err)
	d := &forge.Deliverer{Meta: w.f.Meta, Attempts: 3, Backoff: time.Millisecond, AllowPrivate: true}
	require.NoError(t, d.Push(ctx, info.ID, forge.PushEvent{Repo: "owner/public"}))
	defer d.Close()
	var log []forge.Delivery
	require.Eventually(t, func() bool {
		log, err = w.f.Meta.Deliveries(ctx, h.ID, 10)
		return err == nil && len(log) == 1 && log[0].Attempts == 3
	}, 10*time.Second, 5*time.Millisecond)
	assert.Equal(t, 500, log[0].Status)
	assert.True(t, log[0].DeliveredAt.IsZero())
}

// TestWebhooksStayOutside: by default a delivery never connects to a
// loopback address (whoever may add a webhook could reach services
// inside), and the log says why; an URL that is not http(s) is refused
// when added.
func TestWebhooksStayOutside(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	var hits atomic.Int32
	hook := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	defer hook.Close()
	info, _ := w.f.Meta.RepoInfo(ctx, "owner", "public")
	for _, bad := range []string{"javascript:alert(1)", "file:///etc/passwd", "http://", "/relative", "http://user:pass@example.com/"} {
		_, err := w.f.AddWebhook(ctx, info.ID, bad, "k")
		assert.ErrorIs(t, err, forge.ErrBadWebhook, bad)
	}
	h, err := w.f.AddWebhook(ctx, info.ID, hook.URL, "k")
	require.NoError(t, err)
	d := &forge.Deliverer{Meta: w.f.Meta, Attempts: 1}
	defer d.Close()
	require.NoError(t, d.Push(ctx, info.ID, forge.PushEvent{Repo: "owner/public"}))
	var log []forge.Delivery
	require.Eventually(t, func() bool {
		log, err = w.f.Meta.Deliveries(ctx, h.ID, 10)
		return err == nil && len(log) == 1 && log[0].Attempts == 1
	}, 10*time.Second, 5*time.Millisecond)
	assert.Contains(t, log[0].Error, "loopback, private")
	assert.Zero(t, hits.Load())
}

// TestWebhookQueued: with Enqueue, Push hands each recorded delivery to
// the queue; Attempt sends it once per call, records each try, and does
// nothing more once it succeeded (a queue may run a job twice).
func TestWebhookQueued(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	var calls atomic.Int32
	var ids []string
	hook := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		ids = append(ids, r.Header.Get("X-Forgekit-Delivery"))
		if calls.Add(1) == 1 {
			rw.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer hook.Close()
	info, _ := w.f.Meta.RepoInfo(ctx, "owner", "public")
	h, err := w.f.AddWebhook(ctx, info.ID, hook.URL, "k")
	require.NoError(t, err)
	var queued []int64
	d := &forge.Deliverer{Meta: w.f.Meta, AllowPrivate: true, Enqueue: func(ctx context.Context, id int64) error {
		queued = append(queued, id)
		return nil
	}}
	defer d.Close()
	require.NoError(t, d.Push(ctx, info.ID, forge.PushEvent{Repo: "owner/public"}))
	require.Len(t, queued, 1)
	assert.Zero(t, calls.Load(), "nothing sent by Push itself")

	assert.ErrorContains(t, d.Attempt(ctx, queued[0]), "503")
	assert.NoError(t, d.Attempt(ctx, queued[0]))
	assert.NoError(t, d.Attempt(ctx, queued[0]), "delivered already: nothing to do")
	assert.NoError(t, d.Attempt(ctx, 1<<40), "no such delivery: nothing to do")
	assert.Equal(t, int32(2), calls.Load())
	assert.Equal(t, []string{fmt.Sprint(queued[0]), fmt.Sprint(queued[0])}, ids, "one delivery id, for receivers to drop duplicates")
	log, err := w.f.Meta.Deliveries(ctx, h.ID, 10)
	require.NoError(t, err)
	require.Len(t, log, 1)
	assert.Equal(t, 2, log[0].Attempts)
	assert.Equal(t, 200, log[0].Status)
	assert.False(t, log[0].DeliveredAt.IsZero())
}

// TestPushWorkOnAQueue: with Enqueue set, a push hands its work to the
// queue before its answer (and starts nothing itself); FinishPush, run
// twice as a queue may, records the push's delivery to each webhook
// once and hands the same delivery to the queue both times.
func TestPushWorkOnAQueue(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	info, err := w.f.Meta.RepoInfo(ctx, "owner", "public")
	require.NoError(t, err)
	h1, err := w.f.AddWebhook(ctx, info.ID, "http://127.0.0.1:1/a", "k")
	require.NoError(t, err)
	h2, err := w.f.AddWebhook(ctx, info.ID, "http://127.0.0.1:1/b", "k")
	require.NoError(t, err)
	var queued []int64
	var mu sync.Mutex
	w.f.Deliverer = &forge.Deliverer{Meta: w.f.Meta, Enqueue: func(_ context.Context, id int64) error {
		mu.Lock()
		defer mu.Unlock()
		queued = append(queued, id)
		return nil
	}}
	defer w.f.Deliverer.Close()
	works := make(chan forge.PushWork, 1)
	w.f.Enqueue = func(_ context.Context, pw forge.PushWork) error { works <- pw; return nil }

	w.pushAsWriter(t, 2)
	var pw forge.PushWork
	select {
	case pw = <-works: // handed over before git's push returned
	default:
		t.Fatal("the push's work was not queued before its answer")
	}
	assert.Equal(t, info.ID, pw.RepoID)
	assert.NotZero(t, pw.Event.ID, "the push's id, which deliveries are recorded once by")
	w.f.Wait()
	d, err := w.f.Meta.Deliveries(ctx, h1.ID, 10)
	require.NoError(t, err)
	assert.Empty(t, d, "nothing recorded until the queue runs the work")

	// A job survives the queue as JSON.
	b, err := json.Marshal(pw)
	require.NoError(t, err)
	var back forge.PushWork
	require.NoError(t, json.Unmarshal(b, &back))
	require.NoError(t, w.f.FinishPush(ctx, back))
	require.NoError(t, w.f.FinishPush(ctx, back))
	for _, h := range []*forge.Webhook{h1, h2} {
		d, err := w.f.Meta.Deliveries(ctx, h.ID, 10)
		require.NoError(t, err)
		assert.Len(t, d, 1, "one delivery per push and webhook, however many runs")
	}
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, queued, 4)
	assert.ElementsMatch(t, queued[:2], queued[2:], "the second run hands the same deliveries again")
	size, err := w.f.Meta.RepoInfoByID(ctx, info.ID)
	require.NoError(t, err)
	assert.NotZero(t, size.Size)

	// A repository deleted meanwhile leaves nothing to do.
	require.NoError(t, w.f.DeleteRepo(ctx, "owner", "public"))
	assert.NoError(t, w.f.FinishPush(ctx, back))
}

// TestPushWorkQueueDown: a queue that refuses the push's work loses
// nothing: the work runs in the process's background instead.
func TestPushWorkQueueDown(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	info, err := w.f.Meta.RepoInfo(ctx, "owner", "public")
	require.NoError(t, err)
	h, err := w.f.AddWebhook(ctx, info.ID, "http://127.0.0.1:1/a", "k")
	require.NoError(t, err)
	queued := make(chan int64, 1)
	w.f.Deliverer = &forge.Deliverer{Meta: w.f.Meta, Enqueue: func(_ context.Context, id int64) error { queued <- id; return nil }}
	defer w.f.Deliverer.Close()
	w.f.Enqueue = func(context.Context, forge.PushWork) error { return fmt.Errorf("queue: database is locked") }
	w.pushAsWriter(t, 1)
	w.f.Wait()
	d, err := w.f.Meta.Deliveries(ctx, h.ID, 10)
	require.NoError(t, err)
	require.Len(t, d, 1)
	assert.Equal(t, d[0].ID, <-queued)
}

// pushAsWriter pushes a new history of commits commits to owner/public's
// main as writer, through the forge's git handler over loopback.
func (w *world) pushAsWriter(t *testing.T, commits int) {
	t.Helper()
	srv := httptest.NewServer(w.f.GitHandler())
	defer srv.Close()
	src := filepath.Join(t.TempDir(), "src")
	testenv.BareRepo(t, src, testenv.RepoOptions{Commits: commits})
	testenv.Run(t, src, "push", "-q", "http://writer:password-writer@"+srv.Listener.Addr().String()+"/owner/public.git", "main")
}
