package forge

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/forgekit/forgekit/gitproto"
	"github.com/go-git/go-billy/v5/osfs"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/storage/filesystem"
)

// CreateRepo creates owner/name on disk and in the metadata, with its
// default branch (main, which HEAD names) protected; if any step fails,
// nothing remains.
func (f *Forge) CreateRepo(ctx context.Context, owner, name string, private bool, description string) (*RepoInfo, error) {
	if _, err := f.Meta.User(ctx, owner); err != nil {
		return nil, err
	}
	r, err := f.Store.Create(ctx, owner, name)
	if err != nil {
		return nil, err
	}
	info, err := f.Meta.createRepoInfo(ctx, RepoInfo{Owner: r.Owner, Name: r.Name, Private: private, Description: description})
	if err != nil {
		f.Store.discard(r)
		return nil, err
	}
	if err := f.Meta.protectBranch(ctx, info.ID, info.DefaultBranch); err != nil {
		// Without context: the request that failed may be why.
		f.Meta.deleteRepoInfo(context.WithoutCancel(ctx), info.ID)
		f.Store.discard(r)
		return nil, fmt.Errorf("forge: protecting %s: %w", info.DefaultBranch, err)
	}
	return info, nil
}

// DeleteRepo moves owner/name to the store's trash and forgets its
// metadata (collaborators, webhooks and protections go with it).
func (f *Forge) DeleteRepo(ctx context.Context, owner, name string) error {
	info, err := f.Meta.RepoInfo(ctx, owner, name)
	if err != nil {
		return err
	}
	if err := f.Store.Delete(ctx, info.Owner, info.Name); err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	return f.Meta.deleteRepoInfo(ctx, info.ID)
}

// RestoreRepo brings back the most recently deleted owner/name from the
// trash. Its metadata went with the deletion: it comes back private,
// with its default branch protected and no collaborators or webhooks.
// A repository of that name that exists again is ErrExists.
func (f *Forge) RestoreRepo(ctx context.Context, owner, name string) (*RepoInfo, error) {
	if _, err := f.Meta.RepoInfo(ctx, owner, name); err == nil {
		return nil, fmt.Errorf("%w: %s/%s", ErrExists, owner, name)
	}
	r, err := f.Store.Restore(ctx, owner, name)
	if err != nil {
		return nil, err
	}
	return f.register(ctx, r, true, "")
}

// RenameRepo gives owner/name a new name under the same owner, on disk
// and in the metadata; if either step fails, the old name remains. The
// old name is free at once: nothing redirects from it, so that a
// repository made under it later is not shadowed. A push running during
// the rename finishes in the renamed directory.
func (f *Forge) RenameRepo(ctx context.Context, owner, name, newName string) (*RepoInfo, error) {
	info, err := f.Meta.RepoInfo(ctx, owner, name)
	if err != nil {
		return nil, err
	}
	if newName == info.Name {
		return info, nil
	}
	if _, err := f.Store.Rename(ctx, info.Owner, info.Name, info.Owner, newName); err != nil {
		return nil, err
	}
	if err := f.Meta.renameRepoInfo(ctx, info.ID, newName); err != nil {
		// Without context: the request that failed may be why.
		if _, berr := f.Store.Rename(context.WithoutCancel(ctx), info.Owner, newName, info.Owner, info.Name); berr != nil {
			f.logger().Error("forge: renaming back after a failed rename", "repo", info.Owner+"/"+info.Name, "err", berr)
		}
		return nil, err
	}
	info.Name = newName
	return info, nil
}

// UpdateRepo saves a repository's visibility and description. (Its
// name is RenameRepo's, its default branch SetDefaultBranch's.)
func (f *Forge) UpdateRepo(ctx context.Context, r *RepoInfo) error {
	return f.Meta.updateRepoInfo(ctx, r)
}

// CheckBranchName reports whether b may name a branch: a ref name git
// accepts under refs/heads/ (see gitproto.CheckRefName), and not HEAD.
func CheckBranchName(b string) error {
	if b == "HEAD" || strings.HasPrefix(b, "-") {
		return &NameError{Name: b, Reason: "not a branch name"}
	}
	if err := gitproto.CheckRefName("refs/heads/" + b); err != nil {
		return &NameError{Name: b, Reason: strings.TrimPrefix(err.Error(), gitproto.ErrMalformed.Error()+": ")}
	}
	return nil
}

// SetDefaultBranch makes branch the repository's default: HEAD names it
// (what git clone checks out, what pages show first), the metadata
// records it, and it is protected. In a repository with branches, it
// must be one of them (ErrNoBranch).
func (f *Forge) SetDefaultBranch(ctx context.Context, r *RepoInfo, branch string) error {
	if err := CheckBranchName(branch); err != nil {
		return err
	}
	repo, err := f.Store.Get(r.Owner, r.Name)
	if err != nil {
		return err
	}
	if !branchExists(repo.Dir, branch) && hasBranches(repo.Dir) {
		return fmt.Errorf("%w: %s", ErrNoBranch, branch)
	}
	return f.setDefaultBranch(ctx, r, repo.Dir, branch)
}

func (f *Forge) setDefaultBranch(ctx context.Context, r *RepoInfo, dir, branch string) error {
	if err := f.Store.SetHead(ctx, dir, branch); err != nil {
		return err
	}
	if err := f.Meta.setDefaultBranch(ctx, r.ID, branch); err != nil {
		return err
	}
	if err := f.Meta.protectBranch(ctx, r.ID, branch); err != nil {
		return err
	}
	r.DefaultBranch = branch
	return nil
}

// ReadHead returns the branch that HEAD of the repository in dir names,
// whether it exists or not.
func ReadHead(dir string) (string, error) {
	b, err := os.ReadFile(dir + "/HEAD")
	if err != nil {
		return "", fmt.Errorf("forge: %w", err)
	}
	ref, ok := strings.CutPrefix(strings.TrimSpace(string(b)), "ref: refs/heads/")
	if !ok {
		return "", fmt.Errorf("forge: HEAD of %s names no branch", dir)
	}
	return ref, nil
}

// refStorage opens the refs of the repository in dir (no object cache).
func refStorage(dir string) *filesystem.Storage {
	return filesystem.NewStorageWithOptions(osfs.New(dir), cache.NewObjectLRU(0), filesystem.Options{})
}

func branchExists(dir, branch string) bool {
	_, err := refStorage(dir).Reference(plumbing.NewBranchReferenceName(branch))
	return err == nil
}

func hasBranches(dir string) bool {
	iter, err := refStorage(dir).IterReferences()
	if err != nil {
		return false
	}
	defer iter.Close()
	found := false
	iter.ForEach(func(r *plumbing.Reference) error {
		if r.Name().IsBranch() {
			found = true
		}
		return nil
	})
	return found
}

// RepoQuery selects repositories for Repos.
type RepoQuery struct {
	Owner      string // one owner (any case); empty for all
	PublicOnly bool
	// ReadableBy keeps the repositories that user may read: the public
	// ones, their own and those they collaborate on (all of them for a
	// site administrator). For an anonymous reader, use PublicOnly.
	ReadableBy *User
	// Search keeps the repositories whose owner/name or description
	// contains it, in any case.
	Search string
	Limit  int // if zero, 100
}

// likeEscaper escapes LIKE's wildcards, with \ as the escape.
var likeEscaper = strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)

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
	if u := q.ReadableBy; u != nil && !u.Admin {
		where = append(where, `(private = FALSE OR owner_id = ? OR id IN (SELECT repo_id FROM collaborators WHERE user_id = ?))`)
		args = append(args, u.ID, u.ID)
	}
	if q.Search != "" {
		pat := "%" + likeEscaper.Replace(strings.ToLower(q.Search)) + "%"
		where = append(where, `(full_lower LIKE ? ESCAPE '\' OR LOWER(description) LIKE ? ESCAPE '\')`)
		args = append(args, pat, pat)
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

// updateRepoInfo saves a repository's visibility and description. (The
// default branch is Forge.SetDefaultBranch's: HEAD must move with it.)
func (m *Meta) updateRepoInfo(ctx context.Context, r *RepoInfo) error {
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

// RepoInfo is a repository's metadata.
type RepoInfo struct {
	ID            int64
	Owner, Name   string
	OwnerID       int64 // the owner's user id; 0 if that user is gone
	Private       bool
	Description   string
	DefaultBranch string
	PushedAt      time.Time
	Size          int64
}

// createRepoInfo records a new repository; private by default.
func (m *Meta) createRepoInfo(ctx context.Context, r RepoInfo) (*RepoInfo, error) {
	if r.DefaultBranch == "" {
		r.DefaultBranch = "main"
	}
	id, err := m.insert(ctx, `INSERT INTO repos (owner, name, full_lower, private, description, default_branch, created_at, owner_id)
		VALUES (?, ?, ?, ?, ?, ?, ?, (SELECT id FROM users WHERE name_lower = ?)) ON CONFLICT (full_lower) DO NOTHING RETURNING id`,
		r.Owner, r.Name, strings.ToLower(r.Owner+"/"+r.Name), r.Private, r.Description, r.DefaultBranch, m.clock().Unix(), strings.ToLower(r.Owner))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: %s/%s", ErrExists, r.Owner, r.Name)
	}
	if err != nil {
		return nil, fmt.Errorf("forge: %w", err)
	}
	r.ID = id
	if u, err := m.User(ctx, r.Owner); err == nil {
		r.OwnerID = u.ID
	}
	return &r, nil
}

// RepoByID returns the metadata and the directory of the repository
// with that id, or ErrNotFound when either is gone: what background work
// queued for a repository (by id, which a rename keeps) finds when it
// runs.
func (f *Forge) RepoByID(ctx context.Context, id int64) (*RepoInfo, *Repo, error) {
	info, err := f.Meta.RepoInfoByID(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	repo, err := f.Store.Get(info.Owner, info.Name)
	if err != nil {
		return nil, nil, err
	}
	return info, repo, nil
}

// RepoInfoByID returns the metadata of the repository with that id,
// or ErrNotFound (a repository deleted since).
func (m *Meta) RepoInfoByID(ctx context.Context, id int64) (*RepoInfo, error) {
	return scanRepo(m.queryRow(ctx, `SELECT `+repoColumns+` FROM repos WHERE id = ?`, id).Scan)
}

// RepoInfo returns the metadata of owner/name (in any case), or
// ErrNotFound.
func (m *Meta) RepoInfo(ctx context.Context, owner, name string) (*RepoInfo, error) {
	return scanRepo(m.queryRow(ctx, `SELECT `+repoColumns+` FROM repos WHERE full_lower = ?`,
		strings.ToLower(owner+"/"+name)).Scan)
}

// deleteRepoInfo forgets a repository's metadata; its collaborators,
// protections and webhooks go with it.
func (m *Meta) deleteRepoInfo(ctx context.Context, repoID int64) error {
	if _, err := m.exec(ctx, `DELETE FROM repos WHERE id = ?`, repoID); err != nil {
		return fmt.Errorf("forge: %w", err)
	}
	return nil
}

// renameRepoInfo records the repository's new name (its owner stays);
// see Forge.RenameRepo, which moves the files with it. It returns
// ErrExists if the owner has another repository of that name.
func (m *Meta) renameRepoInfo(ctx context.Context, repoID int64, name string) error {
	res, err := m.exec(ctx, `UPDATE repos SET name = ?, full_lower = lower(owner) || '/' || ?
		WHERE id = ? AND NOT EXISTS (SELECT 1 FROM repos o WHERE o.full_lower = lower(repos.owner) || '/' || ? AND o.id <> ?)`,
		name, strings.ToLower(name), repoID, strings.ToLower(name), repoID)
	if err != nil {
		return fmt.Errorf("forge: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		var one int
		if err := m.queryRow(ctx, `SELECT 1 FROM repos WHERE id = ?`, repoID).Scan(&one); err != nil {
			return ErrNotFound
		}
		return fmt.Errorf("%w: %s", ErrExists, name)
	}
	return nil
}

// setDefaultBranch records the repository's default branch (the branch
// HEAD names; see Forge.SetDefaultBranch, which changes both).
func (m *Meta) setDefaultBranch(ctx context.Context, repoID int64, branch string) error {
	res, err := m.exec(ctx, `UPDATE repos SET default_branch = ? WHERE id = ?`, branch, repoID)
	if err != nil {
		return fmt.Errorf("forge: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return nil
}

// resized records the repository's size after a push.
func (m *Meta) resized(ctx context.Context, repoID int64, size int64) error {
	_, err := m.exec(ctx, `UPDATE repos SET size = ? WHERE id = ?`, size, repoID)
	return err
}
