package timebox_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/forgekit/forgekit/timebox"
)

func ExampleDo() {
	err := timebox.Do(context.Background(), 10*time.Millisecond, func(ctx context.Context) error {
		select {
		case <-time.After(time.Minute): // slow work that honours ctx
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	var exp *timebox.Expired
	fmt.Println(errors.Is(err, timebox.ErrExpired), errors.As(err, &exp), exp.Limit)
	// Output:
	// true true 10ms
}

// An outer box bounds the inner one, and its cause is the one reported.
func ExampleBox_nesting() {
	outer := timebox.Box{Name: "request", Limit: 20 * time.Millisecond}
	err := outer.Do(context.Background(), func(ctx context.Context) error {
		return timebox.Box{Name: "render", Limit: time.Hour}.Do(ctx, func(ctx context.Context) error {
			<-ctx.Done()
			return ctx.Err()
		})
	})
	var exp *timebox.Expired
	errors.As(err, &exp)
	fmt.Println(exp.Name)
	// Output:
	// request
}

// A budget shared by the iterations of a loop, with time kept back for
// the error page.
func ExampleBudget() {
	budget := timebox.NewBudget(50 * time.Millisecond)
	budget.Reserve = 10 * time.Millisecond
	var err error
	steps := 0
	for err == nil {
		err = timebox.Box{Budget: budget}.Do(context.Background(), func(ctx context.Context) error {
			select {
			case <-time.After(15 * time.Millisecond):
				steps++
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}
	fmt.Println(errors.Is(err, timebox.ErrExpired), steps >= 1, budget.Remaining() > 0)
	// Output:
	// true true true
}

func ExampleCommand() {
	err := timebox.Do(context.Background(), 50*time.Millisecond, func(ctx context.Context) error {
		cmd := timebox.Command(ctx, "sh", "-c", "sleep 60 & wait")
		cmd.Grace = time.Second
		return cmd.Run()
	})
	fmt.Println(errors.Is(err, timebox.ErrExpired), errors.Is(err, timebox.ErrTerminated))
	// Output:
	// true true
}

func ExampleHandler() {
	h := &timebox.Handler{
		Timeout: 20 * time.Millisecond,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			<-r.Context().Done() // too slow; nothing written yet
		}),
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		fmt.Println(err)
		return
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	fmt.Println(resp.StatusCode, resp.Header.Get("Retry-After"), h.Stats().Refused)
	// Output:
	// 503 5 1
}
