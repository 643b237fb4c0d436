package forge

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/argon2"
)

// CreateUser creates a user, refusing the names CheckName and Reserved
// refuse.
func (f *Forge) CreateUser(ctx context.Context, name, email, password string, admin bool) (*User, error) {
	if f.Reserved != nil && f.Reserved(strings.ToLower(name)) {
		return nil, &NameError{Name: name, Reason: "reserved"}
	}
	return f.Meta.createUser(ctx, name, email, password, admin)
}

// SetPassword changes user's password and forgets the logins remembered
// for git clients, so that the old password stops working at once.
func (f *Forge) SetPassword(ctx context.Context, user, password string) error {
	if err := f.Meta.setPassword(ctx, user, password); err != nil {
		return err
	}
	f.forgetLogins()
	return nil
}

// SetAdmin makes user a site administrator, or not. The change holds
// at once on every path, git included: remembered logins are checked
// against the user as stored.
func (f *Forge) SetAdmin(ctx context.Context, user string, admin bool) error {
	return f.Meta.setAdmin(ctx, user, admin)
}

// SetDisabled disables user, or enables them again. A disabled user can
// neither sign in nor use their tokens, at once on every path (their
// sessions end: see User.Disabled); what they own stays, and enabling
// them gives everything back.
func (f *Forge) SetDisabled(ctx context.Context, user string, disabled bool) error {
	if err := f.Meta.setDisabled(ctx, user, disabled); err != nil {
		return err
	}
	f.forgetLogins()
	return nil
}

// DeleteUser removes user: their tokens and collaborations go with them,
// at once on every path; the repositories they owned stay, owned by no
// one (a new user of the same name does not inherit them).
func (f *Forge) DeleteUser(ctx context.Context, user string) error {
	if err := f.Meta.deleteUser(ctx, user); err != nil {
		return err
	}
	f.forgetLogins()
	return nil
}

// Users returns every user, by name.
func (m *Meta) Users(ctx context.Context) ([]User, error) {
	rows, err := m.query(ctx, `SELECT id, name, email, admin, disabled FROM users ORDER BY name_lower`)
	if err != nil {
		return nil, fmt.Errorf("forge: %w", err)
	}
	defer rows.Close()
	var out []User
	for rows.Next() {
		var u User
		if err := rows.Scan(&u.ID, &u.Name, &u.Email, &u.Admin, &u.Disabled); err != nil {
			return nil, fmt.Errorf("forge: %w", err)
		}
		out = append(out, u)
	}
	return out, rows.Err()
}

// setPassword replaces user's password.
func (m *Meta) setPassword(ctx context.Context, user, password string) error {
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

// User is an account.
type User struct {
	ID    int64
	Name  string
	Email string
	Admin bool
	// Disabled is set for a user who may not sign in or use tokens (see
	// Forge.SetDisabled).
	Disabled bool

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

// createUser adds a user whose password is stored as an argon2id hash.
func (m *Meta) createUser(ctx context.Context, name, email, password string, admin bool) (*User, error) {
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
		ON CONFLICT (name_lower) DO NOTHING RETURNING id`, name, strings.ToLower(name), email, hash, admin, m.clock().Unix())
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: %s", ErrUserExists, name)
	}
	if err != nil {
		return nil, fmt.Errorf("forge: %w", err)
	}
	return &User{ID: id, Name: name, Email: email, Admin: admin, Stamp: stamp(hash)}, nil
}

// User returns the user called name (in any case).
func (m *Meta) User(ctx context.Context, name string) (*User, error) {
	u := &User{}
	var hash string
	err := m.queryRow(ctx, `SELECT id, name, email, admin, disabled, password_hash FROM users WHERE name_lower = ?`, strings.ToLower(name)).
		Scan(&u.ID, &u.Name, &u.Email, &u.Admin, &u.Disabled, &hash)
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
	err := m.queryRow(ctx, `SELECT id, name, email, admin, disabled, password_hash FROM users WHERE id = ?`, id).
		Scan(&u.ID, &u.Name, &u.Email, &u.Admin, &u.Disabled, &hash)
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
	err := m.queryRow(ctx, `SELECT id, name, email, admin, disabled, password_hash FROM users WHERE name_lower = ?`, strings.ToLower(name)).
		Scan(&u.ID, &u.Name, &u.Email, &u.Admin, &u.Disabled, &hash)
	if errors.Is(err, sql.ErrNoRows) {
		checkPassword(dummyHash, password)
		return nil, ErrBadCredentials
	}
	if err != nil {
		return nil, fmt.Errorf("forge: %w", err)
	}
	if !checkPassword(hash, password) || u.Disabled {
		return nil, ErrBadCredentials
	}
	u.Stamp = stamp(hash)
	return u, nil
}

// dummyHash is verified against for unknown users (a hash of nothing in
// particular, with the current parameters).
var dummyHash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$8k3rGm2pQ5+P0Fq3S6a3qgS0vF0dQm0jV0lH6pQ8k0E"

// setAdmin makes user a site administrator, or not.
func (m *Meta) setAdmin(ctx context.Context, user string, admin bool) error {
	res, err := m.exec(ctx, `UPDATE users SET admin = ? WHERE name_lower = ?`, admin, strings.ToLower(user))
	if err != nil {
		return fmt.Errorf("forge: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNoUser
	}
	return nil
}

// setDisabled disables user, or enables them again.
func (m *Meta) setDisabled(ctx context.Context, user string, disabled bool) error {
	res, err := m.exec(ctx, `UPDATE users SET disabled = ? WHERE name_lower = ?`, disabled, strings.ToLower(user))
	if err != nil {
		return fmt.Errorf("forge: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNoUser
	}
	return nil
}

// deleteUser removes user: their tokens and collaborations go with
// them; the repositories they owned stay, owned by no one (a new user of
// the same name does not inherit them).
func (m *Meta) deleteUser(ctx context.Context, user string) error {
	res, err := m.exec(ctx, `DELETE FROM users WHERE name_lower = ?`, strings.ToLower(user))
	if err != nil {
		return fmt.Errorf("forge: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNoUser
	}
	return nil
}
