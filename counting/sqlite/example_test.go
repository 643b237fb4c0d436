package sqlite_test

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/forgekit/forgekit/counting"
	"github.com/forgekit/forgekit/counting/sqlite"
)

func ExampleOpen() {
	dir, _ := os.MkdirTemp("", "counting")
	defer os.RemoveAll(dir)
	st, err := sqlite.Open(filepath.Join(dir, "views.db"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer st.Close()
	c := counting.New(st)
	c.Hit("alice/proj", "")
	fmt.Println(c.Stats().Counted)
	c.Close()
	// Output: 1
}
