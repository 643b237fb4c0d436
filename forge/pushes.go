package forge

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/forgekit/forgekit/gitproto"
)

// Push is a push as recorded for activity feeds: who moved which refs of
// which repository, when.
type Push struct {
	ID      int64
	Repo    string // owner/name
	RepoID  int64
	Private bool
	Pusher  string
	Updates []gitproto.RefUpdate
	At      time.Time
}

// Pushes returns the newest pushes of user (at most limit, 20 if zero)
// to the repositories viewer may read (nil: the public ones), newest
// first.
func (f *Forge) Pushes(ctx context.Context, viewer *Principal, user string, limit int) ([]Push, error) {
	if limit <= 0 {
		limit = 20
	}
	u, err := f.Meta.User(ctx, user)
	if err != nil {
		return nil, err
	}
	q := `SELECT p.id, r.owner, r.name, r.id, r.private, p.refs, p.at FROM pushes p JOIN repos r ON r.id = p.repo_id WHERE p.pusher_id = ?`
	args := []any{u.ID}
	switch {
	case viewer == nil || viewer.User == nil:
		q += ` AND r.private = FALSE`
	case !viewer.User.Admin:
		q += ` AND (r.private = FALSE OR r.owner_id = ? OR r.id IN (SELECT repo_id FROM collaborators WHERE user_id = ?))`
		args = append(args, viewer.User.ID, viewer.User.ID)
	}
	q += ` ORDER BY p.id DESC LIMIT ?`
	args = append(args, limit)
	rows, err := f.Meta.query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("forge: %w", err)
	}
	defer rows.Close()
	var out []Push
	for rows.Next() {
		p := Push{Pusher: u.Name}
		var owner, name, refs string
		var at int64
		if err := rows.Scan(&p.ID, &owner, &name, &p.RepoID, &p.Private, &refs, &at); err != nil {
			return nil, fmt.Errorf("forge: %w", err)
		}
		p.Repo, p.At = owner+"/"+name, time.Unix(at, 0).UTC()
		if err := json.Unmarshal([]byte(refs), &p.Updates); err != nil {
			return nil, fmt.Errorf("forge: push %d: %w", p.ID, err)
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// recordPush records a push of pusher (a user name) for the feeds, and
// its time as the repository's last push, in one transaction. It returns
// the push's id, 0 when pusher is no user (nothing is recorded for the
// feeds then).
func (m *Meta) recordPush(ctx context.Context, repoID int64, pusher string, updates []gitproto.RefUpdate, at time.Time) (int64, error) {
	refs, err := json.Marshal(updates)
	if err != nil {
		return 0, err
	}
	tx, err := m.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("forge: %w", err)
	}
	defer tx.Rollback()
	var id int64
	err = tx.QueryRowContext(ctx, m.rebind(`INSERT INTO pushes (repo_id, pusher_id, refs, at)
		SELECT ?, id, ?, ? FROM users WHERE name_lower = ? RETURNING id`), repoID, string(refs), at.Unix(), strings.ToLower(pusher)).Scan(&id)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("forge: %w", err)
	}
	if _, err := tx.ExecContext(ctx, m.rebind(`UPDATE repos SET pushed_at = ? WHERE id = ?`), at.Unix(), repoID); err != nil {
		return 0, fmt.Errorf("forge: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("forge: %w", err)
	}
	return id, nil
}
