package forge

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// This file holds the listings and updates a forge's pages and settings
// need, and the Forge operations that keep the store and the metadata in
// step.

// Users returns every user, by name.
func (m *Meta) Users(ctx context.Context) ([]User, error) {
	rows, err := m.query(ctx, `SELECT id, name, email, admin FROM users ORDER BY name_lower`)
	if err != nil {
		return nil, fmt.Errorf("forge: %w", err)
	}
	defer rows.Close()
	var out []User
	for rows.Next() {
		var u User
		if err := rows.Scan(&u.ID, &u.Name, &u.Email, &u.Admin); err != nil {
			return nil, fmt.Errorf("forge: %w", err)
		}
		out = append(out, u)
	}
	return out, rows.Err()
}

// SetPassword replaces user's password.
func (m *Meta) SetPassword(ctx context.Context, user, password string) error {
	if len(password) < 8 {
		return errors.New("forge: password shorter than 8 characters")
	}
	hash, err := hashPassword(password)
	if err != nil {
		return fmt.Errorf("forge: %w", err)
	}
	res, err := m.exec(ctx, `UPDATE users SET password_hash = ? WHERE name_lower = ?`, hash, strings.ToLower(user))
	if err != nil {
		return fmt.Errorf("forge: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNoUser
	}
	return nil
}

// TokenInfo describes a token without its secret.
type TokenInfo struct {
	Name      string
	Scope     Scope
	Created   time.Time
	Expires   time.Time // zero for never
	ExpiredAt bool      // past its expiry
}

// Tokens returns user's tokens, newest first.
func (m *Meta) Tokens(ctx context.Context, user string) ([]TokenInfo, error) {
	rows, err := m.query(ctx, `SELECT t.name, t.scope, t.created_at, t.expires_at FROM tokens t
		JOIN users u ON u.id = t.user_id WHERE u.name_lower = ? ORDER BY t.id DESC`, strings.ToLower(user))
	if err != nil {
		return nil, fmt.Errorf("forge: %w", err)
	}
	defer rows.Close()
	var out []TokenInfo
	now := time.Now()
	for rows.Next() {
		var t TokenInfo
		var created, exp int64
		if err := rows.Scan(&t.Name, &t.Scope, &created, &exp); err != nil {
			return nil, fmt.Errorf("forge: %w", err)
		}
		t.Created = time.Unix(created, 0)
		if exp != 0 {
			t.Expires = time.Unix(exp, 0)
			t.ExpiredAt = !now.Before(t.Expires)
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// RepoQuery selects repositories for Repos.
type RepoQuery struct {
	Owner      string // one owner (any case); empty for all
	PublicOnly bool
	Limit      int // if zero, 100
}

// Repos returns repositories, most recently pushed first, then by name.
// It does not check access: callers filter with Forge.Can, or ask for
// PublicOnly.
func (m *Meta) Repos(ctx context.Context, q RepoQuery) ([]RepoInfo, error) {
	var where []string
	var args []any
	if q.Owner != "" {
		where = append(where, `LOWER(owner) = ?`)
		args = append(args, strings.ToLower(q.Owner))
	}
	if q.PublicOnly {
		where = append(where, `private = FALSE`)
	}
	query := `SELECT ` + repoColumns + ` FROM repos`
	if len(where) > 0 {
		query += ` WHERE ` + strings.Join(where, ` AND `)
	}
	if q.Limit <= 0 {
		q.Limit = 100
	}
	query += ` ORDER BY pushed_at DESC, full_lower LIMIT ?`
	args = append(args, q.Limit)
	rows, err := m.query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("forge: %w", err)
	}
	defer rows.Close()
	var out []RepoInfo
	for rows.Next() {
		r, err := scanRepo(rows.Scan)
		if err != nil {
			return nil, err
		}
		out = append(out, *r)
	}
	return out, rows.Err()
}

// repoColumns are the columns scanRepo reads, in its order.
const repoColumns = `id, owner, name, private, description, default_branch, pushed_at, size, owner_id`

func scanRepo(scan func(...any) error) (*RepoInfo, error) {
	r := &RepoInfo{}
	var pushed int64
	var owner sql.NullInt64
	if err := scan(&r.ID, &r.Owner, &r.Name, &r.Private, &r.Description, &r.DefaultBranch, &pushed, &r.Size, &owner); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil, ErrNotFound
		}
		return nil, fmt.Errorf("forge: %w", err)
	}
	if pushed != 0 {
		r.PushedAt = time.Unix(pushed, 0)
	}
	r.OwnerID = owner.Int64
	return r, nil
}

// UpdateRepoInfo saves a repository's visibility and description. (The
// default branch is Forge.SetDefaultBranch's: HEAD must move with it.)
func (m *Meta) UpdateRepoInfo(ctx context.Context, r *RepoInfo) error {
	res, err := m.exec(ctx, `UPDATE repos SET private = ?, description = ? WHERE id = ?`,
		r.Private, r.Description, r.ID)
	if err != nil {
		return fmt.Errorf("forge: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return nil
}

// Collaborator is a user's level on a repository.
type Collaborator struct {
	User  string
	Level Level
}

// Collaborators returns the repository's collaborators by name.
func (m *Meta) Collaborators(ctx context.Context, repoID int64) ([]Collaborator, error) {
	rows, err := m.query(ctx, `SELECT u.name, c.level FROM collaborators c JOIN users u ON u.id = c.user_id
		WHERE c.repo_id = ? ORDER BY u.name_lower`, repoID)
	if err != nil {
		return nil, fmt.Errorf("forge: %w", err)
	}
	defer rows.Close()
	var out []Collaborator
	for rows.Next() {
		var c Collaborator
		if err := rows.Scan(&c.User, &c.Level); err != nil {
			return nil, fmt.Errorf("forge: %w", err)
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// RemoveCollaborator takes user's access to the repository away.
func (m *Meta) RemoveCollaborator(ctx context.Context, repoID int64, user string) error {
	_, err := m.exec(ctx, `DELETE FROM collaborators WHERE repo_id = ? AND user_id = (SELECT id FROM users WHERE name_lower = ?)`,
		repoID, strings.ToLower(user))
	return err
}

// UnprotectBranch removes a protected-branch pattern.
func (m *Meta) UnprotectBranch(ctx context.Context, repoID int64, pattern string) error {
	_, err := m.exec(ctx, `DELETE FROM protected_branches WHERE repo_id = ? AND pattern = ?`, repoID, pattern)
	return err
}

// DeleteWebhook removes one of the repository's webhooks.
func (m *Meta) DeleteWebhook(ctx context.Context, repoID, id int64) error {
	_, err := m.exec(ctx, `DELETE FROM webhooks WHERE repo_id = ? AND id = ?`, repoID, id)
	return err
}

// Ping checks that the database answers.
func (m *Meta) Ping(ctx context.Context) error { return m.db.PingContext(ctx) }
