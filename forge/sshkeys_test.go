package forge_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"

	"github.com/forgekit/forgekit/forge"
	"github.com/forgekit/forgekit/gitproto"
)

func newKeyLine(t *testing.T, comment string) (string, ssh.PublicKey) {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	sp, err := ssh.NewPublicKey(pub)
	require.NoError(t, err)
	line := string(ssh.MarshalAuthorizedKey(sp))
	return line[:len(line)-1] + " " + comment + "\n", sp
}

func TestSSHKeys(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	line, pub := newKeyLine(t, "writer@laptop")
	k, err := w.f.AddSSHKey(ctx, "writer", "", line, false)
	require.NoError(t, err)
	assert.Equal(t, "writer@laptop", k.Name, "named by its comment")
	assert.Equal(t, ssh.FingerprintSHA256(pub), k.Fingerprint)
	roLine, roPub := newKeyLine(t, "ci")
	_, err = w.f.AddSSHKey(ctx, "writer", "deploy", roLine, true)
	require.NoError(t, err)

	small, err := rsa.GenerateKey(rand.Reader, 1024)
	require.NoError(t, err)
	smallPub, err := ssh.NewPublicKey(&small.PublicKey)
	require.NoError(t, err)
	for _, tc := range []struct {
		name, user, line string
		err              error
	}{
		{"same key again", "writer", line, forge.ErrKeyExists},
		{"same key for another user", "reader", line, forge.ErrKeyExists},
		{"garbage", "writer", "ssh-ed25519 AAAA-not-base64", forge.ErrBadKey},
		{"private key", "writer", "-----BEGIN OPENSSH PRIVATE KEY-----", forge.ErrBadKey},
		{"two keys", "writer", roLine + roLine, forge.ErrBadKey},
		{"options", "writer", `command="/bin/sh" ` + line, forge.ErrBadKey},
		{"small RSA", "writer", string(ssh.MarshalAuthorizedKey(smallPub)), forge.ErrBadKey},
		{"no such user", "nobody", newLine(t), forge.ErrNoUser},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := w.f.AddSSHKey(ctx, tc.user, "", tc.line, false)
			assert.ErrorIs(t, err, tc.err)
		})
	}
	keys, err := w.f.Meta.SSHKeys(ctx, "writer")
	require.NoError(t, err)
	require.Len(t, keys, 2)
	assert.Equal(t, "deploy", keys[1].Name)
	assert.True(t, keys[1].ReadOnly)
	assert.Equal(t, "ssh-ed25519", keys[0].Type)
	assert.True(t, keys[0].LastUsed.IsZero())

	// A key authenticates its user; a read-only one reads only.
	p, err := w.f.KeyPrincipal(ctx, k.Fingerprint)
	require.NoError(t, err)
	assert.Equal(t, "writer", p.User.Name)
	pol := w.f.GitPolicy()
	_, who, err := pol.AuthorizePrincipal(ctx, p, "owner/private", gitproto.Write)
	require.NoError(t, err)
	assert.Equal(t, "writer", who)
	ro, err := w.f.KeyPrincipal(ctx, ssh.FingerprintSHA256(roPub))
	require.NoError(t, err)
	assert.Equal(t, forge.ScopeRead, ro.Scope)
	_, _, err = pol.AuthorizePrincipal(ctx, ro, "owner/private", gitproto.Write)
	assert.ErrorIs(t, err, gitproto.ErrForbidden)
	_, _, err = pol.AuthorizePrincipal(ctx, ro, "owner/private", gitproto.Read)
	assert.NoError(t, err)
	_, _, err = pol.AuthorizePrincipal(ctx, nil, "owner/private", gitproto.Read)
	assert.Error(t, err, "anonymous never sees a private repository")
	keys, err = w.f.Meta.SSHKeys(ctx, "writer")
	require.NoError(t, err)
	assert.False(t, keys[0].LastUsed.IsZero(), "its use is recorded")

	// Disabled users' keys and removed keys authenticate nobody.
	require.NoError(t, w.f.SetDisabled(ctx, "writer", true))
	_, err = w.f.KeyPrincipal(ctx, k.Fingerprint)
	assert.ErrorIs(t, err, forge.ErrBadCredentials)
	require.NoError(t, w.f.SetDisabled(ctx, "writer", false))
	assert.ErrorIs(t, w.f.RemoveSSHKey(ctx, "reader", k.Fingerprint), forge.ErrNotFound, "only its owner removes a key")
	require.NoError(t, w.f.RemoveSSHKey(ctx, "writer", k.Fingerprint))
	_, err = w.f.KeyPrincipal(ctx, k.Fingerprint)
	assert.ErrorIs(t, err, forge.ErrBadCredentials)
}

func newLine(t *testing.T) string {
	l, _ := newKeyLine(t, "x")
	return l
}
