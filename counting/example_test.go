package counting_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/forgekit/forgekit/counting"
	"github.com/forgekit/forgekit/counting/sqlite"
)

func ExampleCounter() {
	dir, _ := os.MkdirTemp("", "counting")
	defer os.RemoveAll(dir)
	st, err := sqlite.Open(filepath.Join(dir, "views.db"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer st.Close()
	c := counting.New(st)
	defer c.Close()

	// On every page view:
	for range 3 {
		c.Count("alice/proj")
	}
	c.Count("bob/tool")

	// Unflushed views count too.
	now := time.Now()
	top, _ := c.MostViewed(context.Background(), now.Add(-24*time.Hour), now.Add(time.Hour), 10)
	fmt.Println(top)
	// Output:
	// [{alice/proj 3} {bob/tool 1}]
}

func ExampleCounter_Uniques() {
	dir, _ := os.MkdirTemp("", "counting")
	defer os.RemoveAll(dir)
	st, _ := sqlite.Open(filepath.Join(dir, "views.db"))
	defer st.Close()
	c := counting.New(st)
	c.Unique = true
	c.Filter = func(id, viewer string) bool { return viewer != "bot" }
	defer c.Close()
	for _, viewer := range []string{"s1", "s2", "s1", "bot", "s3"} {
		c.Hit("alice/proj", viewer)
	}
	day := time.Now().UTC().Truncate(24 * time.Hour)
	n, _ := c.Uniques(context.Background(), "alice/proj", day, day.Add(24*time.Hour))
	total, _ := c.Total(context.Background(), "alice/proj", day, day.Add(24*time.Hour))
	fmt.Println(n, total)
	// Output:
	// 3 4
}
