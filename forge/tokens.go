package forge

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
)

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
	now := m.clock()
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

// CreateToken makes an access token of user's, named name (unique per
// user), for scope, expiring after ttl (never if zero), and returns it;
// only its hash is kept, so this is the one time it is seen.
func (f *Forge) CreateToken(ctx context.Context, user, name string, scope Scope, ttl time.Duration) (string, error) {
	return f.Meta.createToken(ctx, user, name, scope, ttl)
}

// RevokeToken ends user's token name, at once on every path.
func (f *Forge) RevokeToken(ctx context.Context, user, name string) error {
	if err := f.Meta.revokeToken(ctx, user, name); err != nil {
		return err
	}
	f.forgetLogins()
	return nil
}

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

// createToken returns a new access token of user, shown this once: only
// its SHA-256 is stored. ttl 0 means it never expires.
func (m *Meta) createToken(ctx context.Context, user, name string, scope Scope, ttl time.Duration) (string, error) {
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
		exp = m.clock().Add(ttl).Unix()
	}
	if _, err := m.exec(ctx, `INSERT INTO tokens (user_id, name, hash, scope, expires_at, created_at) VALUES (?, ?, ?, ?, ?, ?)`,
		u.ID, name, tokenHash(token), string(scope), exp, m.clock().Unix()); err != nil {
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
	err := m.queryRow(ctx, `SELECT u.id, u.name, u.email, u.admin, u.disabled, t.scope, t.expires_at
		FROM tokens t JOIN users u ON u.id = t.user_id WHERE t.hash = ?`, tokenHash(token)).
		Scan(&u.ID, &u.Name, &u.Email, &u.Admin, &u.Disabled, &scope, &exp)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, "", ErrBadCredentials
	}
	if err != nil {
		return nil, "", fmt.Errorf("forge: %w", err)
	}
	if (exp != 0 && m.clock().Unix() >= exp) || u.Disabled {
		return nil, "", ErrBadCredentials
	}
	return u, Scope(scope), nil
}

// revokeToken deletes user's token called name.
func (m *Meta) revokeToken(ctx context.Context, user, name string) error {
	res, err := m.exec(ctx, `DELETE FROM tokens WHERE name = ? AND user_id = (SELECT id FROM users WHERE name_lower = ?)`, name, strings.ToLower(user))
	if err != nil {
		return fmt.Errorf("forge: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return nil
}
