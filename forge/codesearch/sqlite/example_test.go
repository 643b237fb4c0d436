package sqlite_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/forgekit/forgekit/forge/codesearch"
	"github.com/forgekit/forgekit/forge/codesearch/sqlite"
)

func ExampleStore_Search() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "codesearch")
	defer os.RemoveAll(dir)
	st, err := sqlite.Open(ctx, filepath.Join(dir, "search.db"))
	if err != nil {
		panic(err)
	}
	defer st.Close()
	// An Indexer writes these from git; here, by hand.
	st.Apply(ctx, 1, "c0ffee0000000000000000000000000000000000", true, codesearch.Changes(
		codesearch.Change{Path: "main.go", Blob: "b1", Content: []byte("package main\n\n// Greet says hello.\nfunc Greet() {}\n")},
		codesearch.Change{Path: "README.md", Blob: "b2", Content: []byte("# Hello\n")},
	))
	res, err := st.Search(ctx, codesearch.Query{Text: "HELLO", Repos: []int64{1}})
	if err != nil {
		panic(err)
	}
	for _, r := range res {
		for _, l := range r.Lines {
			if !l.Context {
				fmt.Printf("%s:%d: %s\n", r.Path, l.N, l.Text)
			}
		}
	}
	// Output:
	// README.md:1: # Hello
	// main.go:3: // Greet says hello.
}
