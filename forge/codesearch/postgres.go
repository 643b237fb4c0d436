package codesearch

import (
	"context"
	"database/sql"
	"fmt"
	"iter"
	"strings"
)

// PostgresStore keeps the index in PostgreSQL: the files' text in a
// table with a pg_trgm GIN index, which ILIKE uses to find candidates,
// in the forge's own database (so that one backup holds everything). It
// takes a *sql.DB that the caller opened with its PostgreSQL driver, so
// that this package imports none, and creates the pg_trgm extension if
// it is missing (a trusted extension: the database's owner may). A
// PostgresStore is safe for concurrent use, from several processes too.
type PostgresStore struct {
	db *sql.DB
}

const postgresSchema = `
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE TABLE IF NOT EXISTS codesearch_repos (
	repo_id   BIGINT PRIMARY KEY,
	commit_id TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS codesearch_files (
	repo_id BIGINT NOT NULL,
	path    TEXT NOT NULL,
	blob    TEXT NOT NULL,
	body    TEXT NOT NULL,
	PRIMARY KEY (repo_id, path)
);
CREATE INDEX IF NOT EXISTS codesearch_files_body ON codesearch_files USING gin (body gin_trgm_ops);
`

// NewPostgres returns a store in db, creating its tables if needed
// (processes starting together take turns through an advisory lock).
// The caller keeps db: Close does not close it.
func NewPostgres(ctx context.Context, db *sql.DB) (*PostgresStore, error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("codesearch: %w", err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock(7270004)`); err != nil {
		return nil, fmt.Errorf("codesearch: %w", err)
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock(7270004)`)
	if _, err := conn.ExecContext(ctx, postgresSchema); err != nil {
		return nil, fmt.Errorf("codesearch: creating the tables (pg_trgm must be available): %w", err)
	}
	return &PostgresStore{db: db}, nil
}

// Indexed returns the commit indexed for repo, "" for none.
func (s *PostgresStore) Indexed(ctx context.Context, repo int64) (string, error) {
	var c string
	err := s.db.QueryRowContext(ctx, `SELECT commit_id FROM codesearch_repos WHERE repo_id = $1`, repo).Scan(&c)
	if err == sql.ErrNoRows {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("codesearch: %w", err)
	}
	return c, nil
}

// Apply records repo's changes in one transaction.
func (s *PostgresStore) Apply(ctx context.Context, repo int64, commit string, replace bool, changes iter.Seq2[Change, error]) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("codesearch: %w", err)
	}
	defer tx.Rollback()
	// One updater of a repository at a time, across processes.
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(7270005, $1::int)`, int32(repo)); err != nil {
		return fmt.Errorf("codesearch: %w", err)
	}
	if replace {
		if _, err := tx.ExecContext(ctx, `DELETE FROM codesearch_files WHERE repo_id = $1`, repo); err != nil {
			return fmt.Errorf("codesearch: %w", err)
		}
	}
	for c, err := range changes {
		if err != nil {
			return err
		}
		if c.Blob == "" {
			if _, err := tx.ExecContext(ctx, `DELETE FROM codesearch_files WHERE repo_id = $1 AND path = $2`, repo, c.Path); err != nil {
				return fmt.Errorf("codesearch: %w", err)
			}
			continue
		}
		// PostgreSQL text holds no NUL (binary files are left out
		// before; this is for text with a stray one further in).
		body := strings.ReplaceAll(string(c.Content), "\x00", "\uFFFD")
		if _, err := tx.ExecContext(ctx, `INSERT INTO codesearch_files (repo_id, path, blob, body) VALUES ($1, $2, $3, $4)
			ON CONFLICT (repo_id, path) DO UPDATE SET blob = excluded.blob, body = excluded.body`, repo, c.Path, c.Blob, body); err != nil {
			return fmt.Errorf("codesearch: %s: %w", c.Path, err)
		}
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO codesearch_repos (repo_id, commit_id) VALUES ($1, $2)
		ON CONFLICT (repo_id) DO UPDATE SET commit_id = excluded.commit_id`, repo, commit); err != nil {
		return fmt.Errorf("codesearch: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("codesearch: %w", err)
	}
	return nil
}

// Forget removes everything indexed of repo.
func (s *PostgresStore) Forget(ctx context.Context, repo int64) error {
	_, err := s.db.ExecContext(ctx, `WITH f AS (DELETE FROM codesearch_files WHERE repo_id = $1)
		DELETE FROM codesearch_repos WHERE repo_id = $1`, repo)
	if err != nil {
		return fmt.Errorf("codesearch: %w", err)
	}
	return nil
}

// likeEscaper escapes ILIKE's wildcards (the default escape is \).
var likeEscaper = strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)

// Search returns the files of q.Repos that contain q.Text, by
// repository and path.
func (s *PostgresStore) Search(ctx context.Context, q Query) ([]Result, error) {
	if err := q.check(); err != nil {
		return nil, err
	}
	rows, err := s.db.QueryContext(ctx, `SELECT repo_id, path, body FROM codesearch_files
		WHERE repo_id = ANY($1) AND body ILIKE $2 ORDER BY repo_id, path LIMIT $3`,
		q.Repos, "%"+likeEscaper.Replace(q.Text)+"%", q.Limit*2)
	if err != nil {
		return nil, fmt.Errorf("codesearch: %w", err)
	}
	defer rows.Close()
	var out []Result
	for rows.Next() && len(out) < q.Limit {
		var r Result
		var body []byte
		if err := rows.Scan(&r.Repo, &r.Path, &body); err != nil {
			return nil, fmt.Errorf("codesearch: %w", err)
		}
		if r.Lines, r.More = Lines(body, q.Text, q.LinesPerFile); len(r.Lines) > 0 {
			out = append(out, r)
		}
	}
	return out, rows.Err()
}
