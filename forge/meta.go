package forge

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"embed"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the database/sql driver "pgx"
	_ "github.com/mattn/go-sqlite3"    // the database/sql driver "sqlite3"
	"golang.org/x/crypto/argon2"
)

//go:embed migrations/sqlite/*.sql migrations/postgres/*.sql
var migrations embed.FS

var (
	// ErrUserExists is returned when a user of that name (in any case)
	// exists.
	ErrUserExists = errors.New("forge: user exists")
	// ErrNoUser is returned for a user that does not exist.
	ErrNoUser = errors.New("forge: no such user")
	// ErrBadCredentials is returned for a wrong password or an unknown,
	// expired or revoked token. It says no more, on purpose.
	ErrBadCredentials = errors.New("forge: bad credentials")
)

// Meta is the forge's metadata (users, tokens, repositories,
// collaborators, protected branches, webhooks) in a SQL database: SQLite
// by default (WAL, busy timeout, foreign keys), or PostgreSQL for
// deployments of several machines (OpenMetaDSN). Both run the same
// statements through database/sql, portable SQL (upserts with ON
// CONFLICT, RETURNING for new ids, TRUE and FALSE), with the placeholders
// rewritten for PostgreSQL; the migrations are kept per database, with
// the same versions. A Meta is safe for concurrent use.
//
// There is deliberately no interface with a method per query: database/sql
// is the seam, and a third database would be a third dialect.
type Meta struct {
	db       *sql.DB
	postgres bool // $n placeholders, BOOLEAN columns, advisory lock while migrating
}

// OpenMeta opens (creating and migrating if needed) the SQLite database
// at path.
func OpenMeta(ctx context.Context, path string) (*Meta, error) {
	if err := createPrivate(path); err != nil {
		return nil, err
	}
	db, err := sql.Open("sqlite3", "file:"+path+"?_journal_mode=WAL&_busy_timeout=5000&_foreign_keys=on&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("forge: %w", err)
	}
	return openMeta(ctx, db, false)
}

// OpenMetaDSN opens the metadata database named by dsn: a PostgreSQL URL
// (postgres://user@host/db?sslmode=disable, through pgx), or a SQLite
// file ("sqlite:PATH" or a plain path).
func OpenMetaDSN(ctx context.Context, dsn string) (*Meta, error) {
	if !IsPostgresDSN(dsn) {
		return OpenMeta(ctx, strings.TrimPrefix(dsn, "sqlite:"))
	}
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return nil, fmt.Errorf("forge: %w", err)
	}
	return openMeta(ctx, db, true)
}

// createPrivate creates the SQLite file at path readable by its owner
// alone (it holds password and token hashes, and webhook secrets); SQLite
// gives its journal files the same mode. An existing file is left as it
// is.
func createPrivate(path string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if errors.Is(err, os.ErrExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("forge: %w", err)
	}
	return f.Close()
}

// IsPostgresDSN reports whether dsn names a PostgreSQL database.
func IsPostgresDSN(dsn string) bool {
	return strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
}

func openMeta(ctx context.Context, db *sql.DB, postgres bool) (*Meta, error) {
	m := &Meta{db: db, postgres: postgres}
	if err := m.migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return m, nil
}

// Close closes the database.
func (m *Meta) Close() error { return m.db.Close() }

// rebind rewrites ? placeholders as $1, $2, ... for PostgreSQL. (No
// statement of this package has a ? inside a string literal.)
func (m *Meta) rebind(q string) string {
	if !m.postgres || !strings.Contains(q, "?") {
		return q
	}
	parts := strings.Split(q, "?")
	var b strings.Builder
	b.WriteString(parts[0])
	for i, p := range parts[1:] {
		b.WriteByte('$')
		b.WriteString(strconv.Itoa(i + 1))
		b.WriteString(p)
	}
	return b.String()
}

// queryer is what *sql.DB, *sql.Conn and *sql.Tx have in common.
type queryer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func (m *Meta) exec(ctx context.Context, q string, args ...any) (sql.Result, error) {
	return m.db.ExecContext(ctx, m.rebind(q), args...)
}

func (m *Meta) query(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	return m.db.QueryContext(ctx, m.rebind(q), args...)
}

func (m *Meta) queryRow(ctx context.Context, q string, args ...any) *sql.Row {
	return m.db.QueryRowContext(ctx, m.rebind(q), args...)
}

// insert runs an INSERT ... RETURNING id and returns the id, or
// sql.ErrNoRows when ON CONFLICT DO NOTHING inserted nothing.
func (m *Meta) insert(ctx context.Context, q string, args ...any) (int64, error) {
	var id int64
	err := m.queryRow(ctx, q, args...).Scan(&id)
	return id, err
}

// migrate applies the embedded migrations of the database not applied
// yet, each in its own transaction, in the order of their version
// numbers. Processes opening the database together take turns: SQLite's
// immediate transactions, PostgreSQL's advisory lock.
func (m *Meta) migrate(ctx context.Context) error {
	dir := "migrations/sqlite"
	var q queryer = m.db
	if m.postgres {
		dir = "migrations/postgres"
		conn, err := m.db.Conn(ctx)
		if err != nil {
			return fmt.Errorf("forge: migrations: %w", err)
		}
		defer conn.Close()
		if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock(7270001)`); err != nil {
			return fmt.Errorf("forge: migrations: %w", err)
		}
		defer conn.ExecContext(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock(7270001)`)
		q = conn
	}
	if _, err := q.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)`); err != nil {
		return fmt.Errorf("forge: migrations: %w", err)
	}
	names, err := fs.Glob(migrations, dir+"/*.sql")
	if err != nil {
		return fmt.Errorf("forge: migrations: %w", err)
	}
	sort.Strings(names)
	for _, name := range names {
		base := path.Base(name)
		v, err := strconv.Atoi(strings.SplitN(base, "_", 2)[0])
		if err != nil {
			return fmt.Errorf("forge: migration %s: bad version", base)
		}
		if err := m.apply(ctx, q, v, name); err != nil {
			return err
		}
	}
	return nil
}

func (m *Meta) apply(ctx context.Context, q queryer, version int, name string) error {
	begin := func() (*sql.Tx, error) {
		if c, ok := q.(*sql.Conn); ok {
			return c.BeginTx(ctx, nil)
		}
		return m.db.BeginTx(ctx, nil)
	}
	tx, err := begin()
	if err != nil {
		return fmt.Errorf("forge: migration %d: %w", version, err)
	}
	defer tx.Rollback()
	var n int
	if err := tx.QueryRowContext(ctx, m.rebind(`SELECT COUNT(*) FROM schema_migrations WHERE version = ?`), version).Scan(&n); err != nil {
		return fmt.Errorf("forge: migration %d: %w", version, err)
	}
	if n > 0 {
		return nil
	}
	body, err := migrations.ReadFile(name)
	if err != nil {
		return fmt.Errorf("forge: migration %d: %w", version, err)
	}
	if _, err := tx.ExecContext(ctx, string(body)); err != nil {
		return fmt.Errorf("forge: migration %d: %w", version, err)
	}
	if _, err := tx.ExecContext(ctx, m.rebind(`INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)`), version, time.Now().Unix()); err != nil {
		return fmt.Errorf("forge: migration %d: %w", version, err)
	}
	return tx.Commit()
}

// SchemaVersion returns the highest migration applied.
func (m *Meta) SchemaVersion(ctx context.Context) (int, error) {
	var v sql.NullInt64
	err := m.queryRow(ctx, `SELECT MAX(version) FROM schema_migrations`).Scan(&v)
	return int(v.Int64), err
}

// User is an account.
type User struct {
	ID    int64
	Name  string
	Email string
	Admin bool

	// Stamp changes whenever the password does (it is derived from the
	// stored hash, and tells nothing of it), so that a session that
	// carries it ends when the password changes. Set by User and
	// CheckPassword.
	Stamp string
}

// stamp derives User.Stamp from a password hash.
func stamp(hash string) string {
	sum := sha256.Sum256([]byte("forgekit session stamp\x00" + hash))
	return hex.EncodeToString(sum[:8])
}

// Parameters of the argon2id password hashes (OWASP's recommended
// minimum: 19 MiB, 2 passes, 1 lane). They travel in each hash, so they
// can be raised later without breaking old passwords.
const (
	argonTime    = 2
	argonMemory  = 19 * 1024
	argonThreads = 1
	argonKeyLen  = 32
)

func hashPassword(password string) (string, error) {
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	key := argon2.IDKey([]byte(password), salt, argonTime, argonMemory, argonThreads, argonKeyLen)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, argonMemory, argonTime, argonThreads,
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key)), nil
}

func checkPassword(encoded, password string) bool {
	f := strings.Split(encoded, "$")
	if len(f) != 6 || f[1] != "argon2id" {
		return false
	}
	var mem, t uint32
	var p uint8
	if _, err := fmt.Sscanf(f[3], "m=%d,t=%d,p=%d", &mem, &t, &p); err != nil {
		return false
	}
	salt, err1 := base64.RawStdEncoding.DecodeString(f[4])
	want, err2 := base64.RawStdEncoding.DecodeString(f[5])
	if err1 != nil || err2 != nil {
		return false
	}
	got := argon2.IDKey([]byte(password), salt, t, mem, p, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1
}

// CreateUser adds a user whose password is stored as an argon2id hash.
func (m *Meta) CreateUser(ctx context.Context, name, email, password string, admin bool) (*User, error) {
	if err := CheckName(name); err != nil {
		return nil, err
	}
	if len(password) < 8 {
		return nil, errors.New("forge: password shorter than 8 characters")
	}
	hash, err := hashPassword(password)
	if err != nil {
		return nil, fmt.Errorf("forge: %w", err)
	}
	id, err := m.insert(ctx, `INSERT INTO users (name, name_lower, email, password_hash, admin, created_at) VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (name_lower) DO NOTHING RETURNING id`, name, strings.ToLower(name), email, hash, admin, time.Now().Unix())
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: %s", ErrUserExists, name)
	}
	if err != nil {
		return nil, fmt.Errorf("forge: %w", err)
	}
	return &User{ID: id, Name: name, Email: email, Admin: admin}, nil
}

// User returns the user called name (in any case).
func (m *Meta) User(ctx context.Context, name string) (*User, error) {
	u := &User{}
	var hash string
	err := m.queryRow(ctx, `SELECT id, name, email, admin, password_hash FROM users WHERE name_lower = ?`, strings.ToLower(name)).
		Scan(&u.ID, &u.Name, &u.Email, &u.Admin, &hash)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNoUser
	}
	if err != nil {
		return nil, fmt.Errorf("forge: %w", err)
	}
	u.Stamp = stamp(hash)
	return u, nil
}

// UserByID returns the user with that id, or ErrNoUser.
func (m *Meta) UserByID(ctx context.Context, id int64) (*User, error) {
	u := &User{}
	var hash string
	err := m.queryRow(ctx, `SELECT id, name, email, admin, password_hash FROM users WHERE id = ?`, id).
		Scan(&u.ID, &u.Name, &u.Email, &u.Admin, &hash)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNoUser
	}
	if err != nil {
		return nil, fmt.Errorf("forge: %w", err)
	}
	u.Stamp = stamp(hash)
	return u, nil
}

// CheckPassword returns the user if password is theirs. An unknown user
// costs a hash too, so that timing does not tell which names exist.
func (m *Meta) CheckPassword(ctx context.Context, name, password string) (*User, error) {
	var hash string
	u := &User{}
	err := m.queryRow(ctx, `SELECT id, name, email, admin, password_hash FROM users WHERE name_lower = ?`, strings.ToLower(name)).
		Scan(&u.ID, &u.Name, &u.Email, &u.Admin, &hash)
	if errors.Is(err, sql.ErrNoRows) {
		checkPassword(dummyHash, password)
		return nil, ErrBadCredentials
	}
	if err != nil {
		return nil, fmt.Errorf("forge: %w", err)
	}
	if !checkPassword(hash, password) {
		return nil, ErrBadCredentials
	}
	u.Stamp = stamp(hash)
	return u, nil
}

// dummyHash is verified against for unknown users (a hash of nothing in
// particular, with the current parameters).
var dummyHash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$8k3rGm2pQ5+P0Fq3S6a3qgS0vF0dQm0jV0lH6pQ8k0E"

// Scope is what a token allows.
type Scope string

// The token scopes.
const (
	ScopeRead  Scope = "read"
	ScopeWrite Scope = "write"
)

// IsToken reports whether s has the form of an access token (rather than
// a password).
func IsToken(s string) bool { return strings.HasPrefix(s, tokenPrefix) }

// tokenPrefix marks forgekit tokens, so that secret scanners can find
// leaked ones.
const tokenPrefix = "fkt_"

func tokenHash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// CreateToken returns a new access token of user, shown this once: only
// its SHA-256 is stored. ttl 0 means it never expires.
func (m *Meta) CreateToken(ctx context.Context, user, name string, scope Scope, ttl time.Duration) (string, error) {
	if scope != ScopeRead && scope != ScopeWrite {
		return "", fmt.Errorf("forge: unknown scope %q", scope)
	}
	u, err := m.User(ctx, user)
	if err != nil {
		return "", err
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("forge: %w", err)
	}
	token := tokenPrefix + base64.RawURLEncoding.EncodeToString(raw)
	var exp int64
	if ttl > 0 {
		exp = time.Now().Add(ttl).Unix()
	}
	if _, err := m.exec(ctx, `INSERT INTO tokens (user_id, name, hash, scope, expires_at, created_at) VALUES (?, ?, ?, ?, ?, ?)`,
		u.ID, name, tokenHash(token), string(scope), exp, time.Now().Unix()); err != nil {
		return "", fmt.Errorf("forge: %w", err)
	}
	return token, nil
}

// CheckToken returns the user and scope of a valid token.
func (m *Meta) CheckToken(ctx context.Context, token string) (*User, Scope, error) {
	if !strings.HasPrefix(token, tokenPrefix) {
		return nil, "", ErrBadCredentials
	}
	u := &User{}
	var scope string
	var exp int64
	err := m.queryRow(ctx, `SELECT u.id, u.name, u.email, u.admin, t.scope, t.expires_at
		FROM tokens t JOIN users u ON u.id = t.user_id WHERE t.hash = ?`, tokenHash(token)).
		Scan(&u.ID, &u.Name, &u.Email, &u.Admin, &scope, &exp)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, "", ErrBadCredentials
	}
	if err != nil {
		return nil, "", fmt.Errorf("forge: %w", err)
	}
	if exp != 0 && time.Now().Unix() >= exp {
		return nil, "", ErrBadCredentials
	}
	return u, Scope(scope), nil
}

// RevokeToken deletes user's token called name.
func (m *Meta) RevokeToken(ctx context.Context, user, name string) error {
	res, err := m.exec(ctx, `DELETE FROM tokens WHERE name = ? AND user_id = (SELECT id FROM users WHERE name_lower = ?)`, name, strings.ToLower(user))
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

// CreateRepoInfo records a new repository; private by default.
func (m *Meta) CreateRepoInfo(ctx context.Context, r RepoInfo) (*RepoInfo, error) {
	if r.DefaultBranch == "" {
		r.DefaultBranch = "main"
	}
	id, err := m.insert(ctx, `INSERT INTO repos (owner, name, full_lower, private, description, default_branch, created_at, owner_id)
		VALUES (?, ?, ?, ?, ?, ?, ?, (SELECT id FROM users WHERE name_lower = ?)) ON CONFLICT (full_lower) DO NOTHING RETURNING id`,
		r.Owner, r.Name, strings.ToLower(r.Owner+"/"+r.Name), r.Private, r.Description, r.DefaultBranch, time.Now().Unix(), strings.ToLower(r.Owner))
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

// RepoInfo returns the metadata of owner/name (in any case).
func (m *Meta) RepoInfo(ctx context.Context, owner, name string) (*RepoInfo, error) {
	return scanRepo(m.queryRow(ctx, `SELECT `+repoColumns+` FROM repos WHERE full_lower = ?`,
		strings.ToLower(owner+"/"+name)).Scan)
}

// DeleteRepoInfo forgets a repository's metadata; its collaborators,
// protections and webhooks go with it.
func (m *Meta) DeleteRepoInfo(ctx context.Context, repoID int64) error {
	if _, err := m.exec(ctx, `DELETE FROM repos WHERE id = ?`, repoID); err != nil {
		return fmt.Errorf("forge: %w", err)
	}
	return nil
}

// RenameRepoInfo records the repository's new name (its owner stays);
// see Forge.RenameRepo, which moves the files with it. It returns
// ErrExists if the owner has another repository of that name.
func (m *Meta) RenameRepoInfo(ctx context.Context, repoID int64, name string) error {
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

// SetDefaultBranch records the repository's default branch (the branch
// HEAD names; see Forge.SetDefaultBranch, which changes both).
func (m *Meta) SetDefaultBranch(ctx context.Context, repoID int64, branch string) error {
	res, err := m.exec(ctx, `UPDATE repos SET default_branch = ? WHERE id = ?`, branch, repoID)
	if err != nil {
		return fmt.Errorf("forge: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return nil
}

// Pushed records a push: its time and the repository's new size.
func (m *Meta) Pushed(ctx context.Context, repoID int64, at time.Time, size int64) error {
	_, err := m.exec(ctx, `UPDATE repos SET pushed_at = ?, size = ? WHERE id = ?`, at.Unix(), size, repoID)
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

// SetCollaborator gives user level on the repository (an upsert).
func (m *Meta) SetCollaborator(ctx context.Context, repoID int64, user string, level Level) error {
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

// ProtectBranch adds a protected-branch pattern (a ref name, or a
// path.Match pattern such as "release/*").
func (m *Meta) ProtectBranch(ctx context.Context, repoID int64, pattern string) error {
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

// SetAdmin makes user a site administrator, or not.
func (m *Meta) SetAdmin(ctx context.Context, user string, admin bool) error {
	res, err := m.exec(ctx, `UPDATE users SET admin = ? WHERE name_lower = ?`, admin, strings.ToLower(user))
	if err != nil {
		return fmt.Errorf("forge: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNoUser
	}
	return nil
}

// DeleteUser removes user: their tokens and collaborations go with
// them; the repositories they owned stay, owned by no one (a new user of
// the same name does not inherit them).
func (m *Meta) DeleteUser(ctx context.Context, user string) error {
	res, err := m.exec(ctx, `DELETE FROM users WHERE name_lower = ?`, strings.ToLower(user))
	if err != nil {
		return fmt.Errorf("forge: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNoUser
	}
	return nil
}
