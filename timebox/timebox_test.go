package timebox_test

import (
	"context"
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/forgekit/forgekit/timebox"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
	)
}

func waitDone(ctx context.Context) error {
	<-ctx.Done()
	return ctx.Err()
}

func TestDoExpires(t *testing.T) {
	t.Parallel()
	err := timebox.Do(context.Background(), 20*time.Millisecond, waitDone)
	require.Error(t, err)
	assert.ErrorIs(t, err, timebox.ErrExpired)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.NotErrorIs(t, err, timebox.ErrBudgetSpent)
	var exp *timebox.Expired
	require.ErrorAs(t, err, &exp)
	assert.Equal(t, 20*time.Millisecond, exp.Limit)
	assert.Contains(t, err.Error(), "TestDoExpires")
	assert.Contains(t, exp.Where(), "timebox_test.go:")
	assert.Contains(t, err.Error(), "expired after 20ms")
}

func TestDoResults(t *testing.T) {
	t.Parallel()
	errOwn := errors.New("own failure")
	for _, tc := range []struct {
		name        string
		limit       time.Duration
		f           func(context.Context) error
		wantExpired bool
		wantOwn     bool
	}{
		{name: "success", limit: time.Minute, f: func(context.Context) error { return nil }},
		{name: "own error in time", limit: time.Minute, f: func(context.Context) error { return errOwn }, wantOwn: true},
		{name: "expired, returns ctx error", limit: 10 * time.Millisecond, f: waitDone, wantExpired: true},
		{name: "expired, returns own error too", limit: 10 * time.Millisecond, f: func(ctx context.Context) error { <-ctx.Done(); return errOwn }, wantExpired: true, wantOwn: true},
		{name: "expired, ignored it and returned nil", limit: 10 * time.Millisecond, f: func(ctx context.Context) error { <-ctx.Done(); return nil }, wantExpired: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := timebox.Box{Name: tc.name, Limit: tc.limit}.Do(context.Background(), tc.f)
			assert.Equal(t, tc.wantExpired, errors.Is(err, timebox.ErrExpired), "%v", err)
			assert.Equal(t, tc.wantOwn, errors.Is(err, errOwn), "%v", err)
			if !tc.wantExpired && !tc.wantOwn {
				assert.NoError(t, err)
			}
		})
	}
}

func TestParentCancelIsNotExpiry(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(10 * time.Millisecond); cancel() }()
	err := timebox.Do(ctx, time.Minute, waitDone)
	assert.ErrorIs(t, err, context.Canceled)
	assert.NotErrorIs(t, err, timebox.ErrExpired)
}

func TestNesting(t *testing.T) {
	t.Parallel()
	t.Run("inner longer than outer is bounded by outer", func(t *testing.T) {
		t.Parallel()
		var inner error
		var innerDeadline time.Time
		outer := timebox.Box{Name: "outer", Limit: 30 * time.Millisecond}.Do(context.Background(), func(ctx context.Context) error {
			outerDeadline, _ := ctx.Deadline()
			inner = timebox.Box{Name: "inner", Limit: time.Hour}.Do(ctx, func(ctx context.Context) error {
				innerDeadline, _ = ctx.Deadline()
				return waitDone(ctx)
			})
			assert.Equal(t, outerDeadline, innerDeadline)
			return inner
		})
		var exp *timebox.Expired
		require.ErrorAs(t, inner, &exp)
		assert.Equal(t, "outer", exp.Name, "the outer's cause is reported")
		require.ErrorAs(t, outer, &exp)
		assert.Equal(t, "outer", exp.Name)
	})
	t.Run("inner shorter fires first", func(t *testing.T) {
		t.Parallel()
		var inner error
		outer := timebox.Box{Name: "outer", Limit: time.Hour}.Do(context.Background(), func(ctx context.Context) error {
			inner = timebox.Box{Name: "inner", Limit: 10 * time.Millisecond}.Do(ctx, waitDone)
			var exp *timebox.Expired
			if errors.As(inner, &exp) && exp.Name == "inner" {
				return nil // handled: the outer box goes on
			}
			return inner
		})
		assert.NoError(t, outer)
		var exp *timebox.Expired
		require.ErrorAs(t, inner, &exp)
		assert.Equal(t, "inner", exp.Name)
	})
	t.Run("FromContext", func(t *testing.T) {
		t.Parallel()
		assert.Nil(t, timebox.FromContext(context.Background()))
		timebox.Box{Name: "here", Limit: time.Minute}.Do(context.Background(), func(ctx context.Context) error {
			assert.Equal(t, "here", timebox.FromContext(ctx).Name)
			return nil
		})
	})
}

func TestBudget(t *testing.T) {
	t.Parallel()
	t.Run("counts only while open", func(t *testing.T) {
		t.Parallel()
		b := timebox.NewBudget(time.Hour)
		before := b.Remaining()
		time.Sleep(20 * time.Millisecond)
		assert.Equal(t, before, b.Remaining(), "no box open: nothing spent")
		timebox.Box{Budget: b}.Do(context.Background(), func(ctx context.Context) error {
			time.Sleep(20 * time.Millisecond)
			return nil
		})
		assert.Less(t, b.Remaining(), before-15*time.Millisecond)
	})
	t.Run("spent across iterations", func(t *testing.T) {
		t.Parallel()
		b := timebox.NewBudget(60 * time.Millisecond)
		b.Name = "loop"
		var err error
		i := 0
		for ; i < 1000 && err == nil; i++ {
			err = timebox.Box{Limit: time.Hour, Budget: b}.Do(context.Background(), func(ctx context.Context) error {
				select {
				case <-time.After(15 * time.Millisecond):
					return nil
				case <-ctx.Done():
					return ctx.Err()
				}
			})
		}
		require.ErrorIs(t, err, timebox.ErrExpired)
		assert.Less(t, i, 1000)
		// Now it is spent: the next box fails at once.
		called := false
		err = timebox.Box{Budget: b}.Do(context.Background(), func(context.Context) error { called = true; return nil })
		assert.False(t, called)
		assert.ErrorIs(t, err, timebox.ErrBudgetSpent)
		assert.ErrorIs(t, err, timebox.ErrExpired)
		assert.Contains(t, err.Error(), `budget "loop" spent`)
	})
	t.Run("reserve is kept back", func(t *testing.T) {
		t.Parallel()
		b := timebox.NewBudget(time.Second)
		b.Reserve = 900 * time.Millisecond
		err := timebox.Box{Limit: time.Hour, Budget: b}.Do(context.Background(), waitDone)
		var exp *timebox.Expired
		require.ErrorAs(t, err, &exp)
		assert.LessOrEqual(t, exp.Limit, 100*time.Millisecond)
		assert.Greater(t, b.Remaining(), 800*time.Millisecond, "the reserve is left for the error page")
	})
	t.Run("concurrent", func(t *testing.T) {
		t.Parallel()
		b := timebox.NewBudget(200 * time.Millisecond)
		var wg sync.WaitGroup
		var expired, ok atomic.Int32
		for range 40 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 20 {
					err := timebox.Box{Budget: b}.Do(context.Background(), func(ctx context.Context) error {
						time.Sleep(time.Millisecond)
						return nil
					})
					if errors.Is(err, timebox.ErrExpired) {
						expired.Add(1)
					} else {
						ok.Add(1)
					}
				}
			}()
		}
		wg.Wait()
		assert.Equal(t, int32(800), expired.Load()+ok.Load())
		assert.LessOrEqual(t, b.Remaining(), 200*time.Millisecond)
	})
}

func TestAfterExpireAndDetached(t *testing.T) {
	t.Parallel()
	type key struct{}
	ran := make(chan *timebox.Expired, 1)
	cleaned := make(chan error, 1)
	err := timebox.Box{Name: "job", Limit: 20 * time.Millisecond}.Do(context.WithValue(context.Background(), key{}, "v"), func(ctx context.Context) error {
		timebox.AfterExpire(ctx, func(e *timebox.Expired) { ran <- e })
		<-ctx.Done()
		// Cleanup after expiry: a detached context with its own limit.
		cctx, cancel := timebox.Detached(ctx, time.Second)
		defer cancel()
		if cctx.Err() != nil || cctx.Value(key{}) != "v" {
			cleaned <- errors.New("detached context is unusable")
		} else if d, ok := cctx.Deadline(); !ok || time.Until(d) > time.Second {
			cleaned <- errors.New("detached context has no limit")
		} else {
			cleaned <- nil
		}
		return ctx.Err()
	})
	assert.ErrorIs(t, err, timebox.ErrExpired)
	select {
	case e := <-ran:
		assert.Equal(t, "job", e.Name)
	case <-time.After(10 * time.Second):
		t.Fatal("AfterExpire hook did not run")
	}
	assert.NoError(t, <-cleaned)

	// Not on an ordinary cancellation.
	ctx, cancel := context.WithCancel(context.Background())
	fired := make(chan struct{}, 1)
	timebox.Do(ctx, time.Minute, func(ctx context.Context) error {
		timebox.AfterExpire(ctx, func(*timebox.Expired) { fired <- struct{}{} })
		cancel()
		return nil
	})
	time.Sleep(20 * time.Millisecond)
	assert.Empty(t, fired)
}

func TestUnblock(t *testing.T) {
	t.Parallel()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	err := timebox.Box{Limit: 20 * time.Millisecond, Grace: 10 * time.Millisecond}.Do(context.Background(), func(ctx context.Context) error {
		release := timebox.Unblock(ctx, a)
		defer release()
		// Code that ignores ctx and blocks on I/O.
		_, err := a.Read(make([]byte, 1))
		return err
	})
	assert.ErrorIs(t, err, timebox.ErrExpired)
	assert.ErrorIs(t, err, os.ErrDeadlineExceeded, "the blocked read was forced to return")
}
