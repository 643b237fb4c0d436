package forge

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path"
	"strings"
)

// SetCollaborator gives user level on the repository, replacing the
// level they had.
func (f *Forge) SetCollaborator(ctx context.Context, repoID int64, user string, level Level) error {
	return f.Meta.setCollaborator(ctx, repoID, user, level)
}

// RemoveCollaborator takes user's level on the repository away.
func (f *Forge) RemoveCollaborator(ctx context.Context, repoID int64, user string) error {
	return f.Meta.removeCollaborator(ctx, repoID, user)
}

// ProtectBranch protects the branches that match pattern (a branch name,
// or a path.Match pattern such as "release/*"): they cannot be deleted
// or force-pushed, and refs under their names cannot be made. An empty
// pattern, or one path.Match cannot read, is a *NameError.
func (f *Forge) ProtectBranch(ctx context.Context, repoID int64, pattern string) error {
	if err := checkBranchPattern(pattern); err != nil {
		return err
	}
	return f.Meta.protectBranch(ctx, repoID, pattern)
}

// UnprotectBranch removes a protection ProtectBranch made.
func (f *Forge) UnprotectBranch(ctx context.Context, repoID int64, pattern string) error {
	return f.Meta.unprotectBranch(ctx, repoID, pattern)
}

// checkBranchPattern accepts what ProtectBranch may store.
func checkBranchPattern(pattern string) error {
	if strings.TrimSpace(pattern) == "" || strings.ContainsAny(pattern, " \t\n") {
		return &NameError{Name: pattern, Reason: "a branch name or pattern is needed, without spaces"}
	}
	if _, err := path.Match(pattern, ""); err != nil {
		return &NameError{Name: pattern, Reason: "not a pattern: " + err.Error()}
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

// removeCollaborator takes user's access to the repository away.
func (m *Meta) removeCollaborator(ctx context.Context, repoID int64, user string) error {
	_, err := m.exec(ctx, `DELETE FROM collaborators WHERE repo_id = ? AND user_id = (SELECT id FROM users WHERE name_lower = ?)`,
		repoID, strings.ToLower(user))
	return err
}

// unprotectBranch removes a protected-branch pattern.
func (m *Meta) unprotectBranch(ctx context.Context, repoID int64, pattern string) error {
	_, err := m.exec(ctx, `DELETE FROM protected_branches WHERE repo_id = ? AND pattern = ?`, repoID, pattern)
	return err
}

// Level is a collaborator's access to a repository.
type Level string

// The collaborator levels, each including the ones before.
const (
	LevelRead  Level = "read"
	LevelWrite Level = "write"
	LevelAdmin Level = "admin"
)

// setCollaborator gives user level on the repository (an upsert).
func (m *Meta) setCollaborator(ctx context.Context, repoID int64, user string, level Level) error {
	switch level {
	case LevelRead, LevelWrite, LevelAdmin:
	default:
		return fmt.Errorf("forge: unknown level %q", level)
	}
	u, err := m.User(ctx, user)
	if err != nil {
		return err
	}
	_, err = m.exec(ctx, `INSERT INTO collaborators (repo_id, user_id, level) VALUES (?, ?, ?)
		ON CONFLICT (repo_id, user_id) DO UPDATE SET level = excluded.level`, repoID, u.ID, string(level))
	return err
}

// Collaborator returns user's level on the repository, or "".
func (m *Meta) Collaborator(ctx context.Context, repoID, userID int64) (Level, error) {
	var l string
	err := m.queryRow(ctx, `SELECT level FROM collaborators WHERE repo_id = ? AND user_id = ?`, repoID, userID).Scan(&l)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return Level(l), err
}

// protectBranch adds a protected-branch pattern (a ref name, or a
// path.Match pattern such as "release/*").
func (m *Meta) protectBranch(ctx context.Context, repoID int64, pattern string) error {
	_, err := m.exec(ctx, `INSERT INTO protected_branches (repo_id, pattern) VALUES (?, ?) ON CONFLICT DO NOTHING`, repoID, pattern)
	return err
}

// ProtectedBranches returns the repository's protected-branch patterns.
func (m *Meta) ProtectedBranches(ctx context.Context, repoID int64) ([]string, error) {
	rows, err := m.query(ctx, `SELECT pattern FROM protected_branches WHERE repo_id = ? ORDER BY pattern`, repoID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var p string
		if err := rows.Scan(&p); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// BranchProtected reports whether branch matches one of the patterns of
// ProtectedBranches (path.Match patterns, "release/*").
func BranchProtected(branch string, patterns []string) bool { return protected(branch, patterns) }
