// Package sqlite provides a codesearch.Store in a SQLite file with an
// FTS5 trigram index, for a forge on one machine.
//
// It uses modernc.org/sqlite, in which FTS5 is built in, rather than the
// cgo driver the rest of forgekit uses: that one compiles FTS5 only under
// a build tag, which `go run` and `go test` of a user's module do not
// pass. The index is a file of its own (search.db beside the forge's
// databases), so that only its reads and writes take this driver, and
// only programs that import this package link it.
package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"iter"
	"strconv"
	"strings"

	_ "modernc.org/sqlite" // the "sqlite" driver, with FTS5

	"github.com/forgekit/forgekit/forge/codesearch"
)

const schema = `
CREATE TABLE IF NOT EXISTS repos (
	repo_id   INTEGER PRIMARY KEY,
	commit_id TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS files (
	id      INTEGER PRIMARY KEY,
	repo_id INTEGER NOT NULL,
	path    TEXT NOT NULL,
	blob    TEXT NOT NULL,
	UNIQUE (repo_id, path)
);
-- The text, indexed by trigrams without regard to case; rowid is files.id.
CREATE VIRTUAL TABLE IF NOT EXISTS content USING fts5(body, tokenize = 'trigram case_sensitive 0');
`

// Store is a codesearch.Store and searcher in a SQLite file. Writes take
// turns (SQLite has one writer); reads run beside them (WAL). A Store is
// safe for concurrent use.
type Store struct {
	db *sql.DB
}

// Open opens (creating if needed) the index in the file path.
func Open(ctx context.Context, path string) (*Store, error) {
	dsn := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)&_pragma=synchronous(NORMAL)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("codesearch: %w", err)
	}
	if _, err := db.ExecContext(ctx, schema); err != nil {
		db.Close()
		return nil, fmt.Errorf("codesearch: %s: %w", path, err)
	}
	return &Store{db: db}, nil
}

// Close closes the file.
func (s *Store) Close() error { return s.db.Close() }

// Indexed returns the commit indexed for repo, "" for none.
func (s *Store) Indexed(ctx context.Context, repo int64) (string, error) {
	var c string
	err := s.db.QueryRowContext(ctx, `SELECT commit_id FROM repos WHERE repo_id = ?`, repo).Scan(&c)
	if err == sql.ErrNoRows {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("codesearch: %w", err)
	}
	return c, nil
}

// Apply records repo's changes in one transaction.
func (s *Store) Apply(ctx context.Context, repo int64, commit string, replace bool, changes iter.Seq2[codesearch.Change, error]) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("codesearch: %w", err)
	}
	defer tx.Rollback()
	if replace {
		if err := forget(ctx, tx, repo); err != nil {
			return err
		}
	}
	del, err := tx.PrepareContext(ctx, `DELETE FROM files WHERE repo_id = ? AND path = ? RETURNING id`)
	if err != nil {
		return fmt.Errorf("codesearch: %w", err)
	}
	defer del.Close()
	for c, err := range changes {
		if err != nil {
			return err
		}
		var id int64
		err := del.QueryRowContext(ctx, repo, c.Path).Scan(&id)
		switch {
		case err == nil:
			if _, err := tx.ExecContext(ctx, `DELETE FROM content WHERE rowid = ?`, id); err != nil {
				return fmt.Errorf("codesearch: %w", err)
			}
		case err != sql.ErrNoRows:
			return fmt.Errorf("codesearch: %w", err)
		}
		if c.Blob == "" {
			continue
		}
		res, err := tx.ExecContext(ctx, `INSERT INTO files (repo_id, path, blob) VALUES (?, ?, ?)`, repo, c.Path, c.Blob)
		if err != nil {
			return fmt.Errorf("codesearch: %w", err)
		}
		id, _ = res.LastInsertId()
		if _, err := tx.ExecContext(ctx, `INSERT INTO content (rowid, body) VALUES (?, ?)`, id, string(c.Content)); err != nil {
			return fmt.Errorf("codesearch: %w", err)
		}
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO repos (repo_id, commit_id) VALUES (?, ?)
		ON CONFLICT (repo_id) DO UPDATE SET commit_id = excluded.commit_id`, repo, commit); err != nil {
		return fmt.Errorf("codesearch: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("codesearch: %w", err)
	}
	return nil
}

// Forget removes everything indexed of repo (a deleted repository).
func (s *Store) Forget(ctx context.Context, repo int64) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("codesearch: %w", err)
	}
	defer tx.Rollback()
	if err := forget(ctx, tx, repo); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM repos WHERE repo_id = ?`, repo); err != nil {
		return fmt.Errorf("codesearch: %w", err)
	}
	return tx.Commit()
}

func forget(ctx context.Context, tx *sql.Tx, repo int64) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM content WHERE rowid IN (SELECT id FROM files WHERE repo_id = ?)`, repo); err != nil {
		return fmt.Errorf("codesearch: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM files WHERE repo_id = ?`, repo); err != nil {
		return fmt.Errorf("codesearch: %w", err)
	}
	return nil
}

// Search returns the files of q.Repos that contain q.Text, by
// repository and path.
func (s *Store) Search(ctx context.Context, q codesearch.Query) ([]codesearch.Result, error) {
	if err := codesearch.Check(&q); err != nil {
		return nil, err
	}
	ids := make([]string, len(q.Repos))
	for i, r := range q.Repos {
		ids[i] = strconv.FormatInt(r, 10)
	}
	// The phrase of the query's trigrams; the index finds candidates,
	// Lines confirms them and finds the lines.
	phrase := `"` + strings.ReplaceAll(q.Text, `"`, `""`) + `"`
	rows, err := s.db.QueryContext(ctx, `SELECT f.repo_id, f.path, c.body FROM content c JOIN files f ON f.id = c.rowid
		WHERE content MATCH ? AND f.repo_id IN (`+strings.Join(ids, ",")+`)
		ORDER BY f.repo_id, f.path LIMIT ?`, phrase, q.Limit*2)
	if err != nil {
		return nil, fmt.Errorf("codesearch: %w", err)
	}
	defer rows.Close()
	var out []codesearch.Result
	for rows.Next() && len(out) < q.Limit {
		var r codesearch.Result
		var body []byte
		if err := rows.Scan(&r.Repo, &r.Path, &body); err != nil {
			return nil, fmt.Errorf("codesearch: %w", err)
		}
		if r.Lines, r.More = codesearch.Lines(body, q.Text, q.LinesPerFile); len(r.Lines) > 0 {
			out = append(out, r)
		}
	}
	return out, rows.Err()
}
