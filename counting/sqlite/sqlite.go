// Package sqlite provides counting's store in a SQLite file, opened with
// the cgo driver github.com/mattn/go-sqlite3.
//
// It is a package of its own so that programs that count in PostgreSQL
// (counting.NewPostgres) link no SQLite and build with CGO_ENABLED=0.
package sqlite

import (
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"

	_ "github.com/mattn/go-sqlite3" // the database/sql driver "sqlite3"

	"github.com/forgekit/forgekit/counting"
)

// Open opens (creating if needed) the counts database at path: WAL, a
// busy timeout of counting.DefaultBusyTimeout, one writer connection
// whose transactions lock at BEGIN, and read-only readers, so that
// several processes on one machine can share the file. A new file is
// readable by its owner only (what people viewed is nobody else's
// business); SQLite gives its journal files the same mode.
func Open(path string) (*counting.SQLiteStore, error) {
	if f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600); err == nil {
		f.Close()
	} else if !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("counting: %w", err)
	}
	q := url.Values{}
	q.Set("_journal_mode", "WAL")
	q.Set("_busy_timeout", fmt.Sprint(counting.DefaultBusyTimeout.Milliseconds()))
	q.Set("_synchronous", "NORMAL")
	dsn := "file:" + path + "?" + q.Encode()
	w, err := sql.Open("sqlite3", dsn+"&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("counting: %w", err)
	}
	w.SetMaxOpenConns(1)
	r, err := sql.Open("sqlite3", dsn+"&_txlock=deferred&mode=ro")
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("counting: %w", err)
	}
	st, err := counting.NewSQLite(w, r)
	if err != nil {
		w.Close()
		r.Close()
		return nil, err
	}
	return st, nil
}
