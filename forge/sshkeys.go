package forge

import (
	"context"
	"crypto/rsa"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// SSHKey is a user's SSH public key. A key may push wherever its user
// may, unless it is ReadOnly, as a token's scope says for tokens.
type SSHKey struct {
	Name        string
	Fingerprint string // SHA256:..., as ssh-keygen -l prints it
	Type        string // ssh-ed25519, ecdsa-sha2-nistp256, ssh-rsa, ...
	PublicKey   string // the authorized_keys line, without options
	ReadOnly    bool
	Created     time.Time
	LastUsed    time.Time // zero if never used
}

// minRSABits is the smallest RSA key accepted (OpenSSH refuses smaller).
const minRSABits = 2048

// keyUseResolution is how stale an SSH key's last use may be before a
// new connection records it again: a clone storm is not a write storm.
const keyUseResolution = time.Minute

// AddSSHKey registers a public key (one authorized_keys line, as in
// id_ed25519.pub) for user under name (the line's comment if empty).
// DSA keys and RSA keys under 2048 bits are refused, as OpenSSH does.
func (f *Forge) AddSSHKey(ctx context.Context, user, name, line string, readOnly bool) (*SSHKey, error) {
	line = strings.TrimSpace(line)
	if strings.Count(line, "\n") > 0 {
		return nil, fmt.Errorf("%w: one key per line, one line", ErrBadKey)
	}
	pub, comment, options, _, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadKey, err)
	}
	if len(options) > 0 {
		return nil, fmt.Errorf("%w: options (%s) are not accepted", ErrBadKey, options[0])
	}
	switch pub.Type() {
	case "ssh-dss": // DSA (ssh.KeyAlgoDSA, deprecated)
		return nil, fmt.Errorf("%w: DSA keys are too weak", ErrBadKey)
	case ssh.KeyAlgoRSA:
		if ck, ok := pub.(ssh.CryptoPublicKey); ok {
			if rk, ok := ck.CryptoPublicKey().(*rsa.PublicKey); ok && rk.N.BitLen() < minRSABits {
				return nil, fmt.Errorf("%w: RSA keys need %d bits or more", ErrBadKey, minRSABits)
			}
		}
	}
	if name = strings.TrimSpace(name); name == "" {
		name = comment
	}
	if name == "" {
		name = pub.Type()
	}
	if len(name) > 100 {
		name = name[:100]
	}
	u, err := f.Meta.User(ctx, user)
	if err != nil {
		return nil, err
	}
	k := &SSHKey{Name: name, Fingerprint: ssh.FingerprintSHA256(pub), Type: pub.Type(),
		PublicKey: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub))), ReadOnly: readOnly, Created: f.Meta.clock().UTC().Truncate(time.Second)}
	var n int
	if err := f.Meta.queryRow(ctx, `SELECT COUNT(*) FROM ssh_keys WHERE fingerprint = ?`, k.Fingerprint).Scan(&n); err != nil {
		return nil, fmt.Errorf("forge: %w", err)
	}
	if n > 0 {
		return nil, ErrKeyExists
	}
	_, err = f.Meta.exec(ctx, `INSERT INTO ssh_keys (user_id, name, fingerprint, public_key, read_only, created_at) VALUES (?, ?, ?, ?, ?, ?)`,
		u.ID, k.Name, k.Fingerprint, k.PublicKey, k.ReadOnly, k.Created.Unix())
	if err != nil {
		if strings.Contains(strings.ToLower(err.Error()), "unique") {
			return nil, ErrKeyExists // a concurrent add of the same key
		}
		return nil, fmt.Errorf("forge: %w", err)
	}
	return k, nil
}

// SSHKeys returns user's SSH keys, oldest first.
func (m *Meta) SSHKeys(ctx context.Context, user string) ([]SSHKey, error) {
	rows, err := m.query(ctx, `SELECT k.name, k.fingerprint, k.public_key, k.read_only, k.created_at, k.last_used
		FROM ssh_keys k JOIN users u ON u.id = k.user_id WHERE u.name_lower = ? ORDER BY k.id`, strings.ToLower(user))
	if err != nil {
		return nil, fmt.Errorf("forge: %w", err)
	}
	defer rows.Close()
	var out []SSHKey
	for rows.Next() {
		var k SSHKey
		var created, used int64
		if err := rows.Scan(&k.Name, &k.Fingerprint, &k.PublicKey, &k.ReadOnly, &created, &used); err != nil {
			return nil, fmt.Errorf("forge: %w", err)
		}
		k.Type, _, _ = strings.Cut(k.PublicKey, " ")
		k.Created = time.Unix(created, 0).UTC()
		if used != 0 {
			k.LastUsed = time.Unix(used, 0).UTC()
		}
		out = append(out, k)
	}
	return out, rows.Err()
}

// RemoveSSHKey removes user's key with the fingerprint; the next
// connection with it is refused (ErrNotFound if user has no such key).
func (f *Forge) RemoveSSHKey(ctx context.Context, user, fingerprint string) error {
	res, err := f.Meta.exec(ctx, `DELETE FROM ssh_keys WHERE fingerprint = ? AND user_id = (SELECT id FROM users WHERE name_lower = ?)`,
		fingerprint, strings.ToLower(user))
	if err != nil {
		return fmt.Errorf("forge: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return nil
}

// KeyPrincipal returns who the public key with the fingerprint (see
// ssh.FingerprintSHA256) authenticates, with ScopeRead for a read-only
// key, and records its use. A key nobody registered, or one of a
// disabled user, is ErrBadCredentials. It reads the database every time,
// so that a removed key is refused at once.
func (f *Forge) KeyPrincipal(ctx context.Context, fp string) (*Principal, error) {
	u := &User{}
	var readOnly bool
	var used int64
	err := f.Meta.queryRow(ctx, `SELECT u.id, u.name, u.email, u.admin, u.disabled, k.read_only, k.last_used
		FROM ssh_keys k JOIN users u ON u.id = k.user_id WHERE k.fingerprint = ?`, fp).
		Scan(&u.ID, &u.Name, &u.Email, &u.Admin, &u.Disabled, &readOnly, &used)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrBadCredentials
	}
	if err != nil {
		return nil, fmt.Errorf("forge: %w", err)
	}
	if u.Disabled {
		return nil, ErrBadCredentials
	}
	if now := f.Meta.clock(); now.Sub(time.Unix(used, 0)) >= keyUseResolution {
		if _, err := f.Meta.exec(ctx, `UPDATE ssh_keys SET last_used = ? WHERE fingerprint = ?`, now.Unix(), fp); err != nil {
			f.logger().WarnContext(ctx, "forge: recording an SSH key's use", "err", err)
		}
	}
	p := &Principal{User: u}
	if readOnly {
		p.Scope = ScopeRead
	}
	return p, nil
}
