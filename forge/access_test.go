package forge_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/forgekit/forgekit/forge"
	"github.com/forgekit/forgekit/internal/testenv"
)

type world struct {
	f     *forge.Forge
	users map[string]*forge.User
}

func newWorld(t *testing.T) *world {
	testenv.Git(t)
	root := t.TempDir()
	st, err := forge.NewStore(root)
	require.NoError(t, err)
	m, _ := openMetaAt(t, root)
	f := &forge.Forge{Meta: m}
	w := &world{f: &forge.Forge{Store: st, Meta: m}, users: map[string]*forge.User{}}
	t.Cleanup(w.f.Wait) // before the Meta closes
	ctx := context.Background()
	for _, u := range []string{"owner", "reader", "writer", "repoadmin", "stranger", "siteadmin"} {
		usr, err := f.CreateUser(ctx, u, "", "password-"+u, u == "siteadmin")
		require.NoError(t, err)
		w.users[u] = usr
	}
	for _, vis := range []string{"public", "private"} {
		r, err := m.CreateRepoInfoForTest(ctx, forge.RepoInfo{Owner: "owner", Name: vis, Private: vis == "private"})
		require.NoError(t, err)
		_, err = st.Create(ctx, "owner", vis)
		require.NoError(t, err)
		require.NoError(t, f.SetCollaborator(ctx, r.ID, "reader", forge.LevelRead))
		require.NoError(t, f.SetCollaborator(ctx, r.ID, "writer", forge.LevelWrite))
		require.NoError(t, f.SetCollaborator(ctx, r.ID, "repoadmin", forge.LevelAdmin))
	}
	return w
}

func TestAccessMatrix(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	const (
		ok    = ""
		hide  = "404"
		login = "401"
		deny  = "403"
	)
	// want[principal][visibility] = results for read, write, admin.
	want := map[string]map[string][3]string{
		"anonymous": {"public": {ok, login, login}, "private": {login, login, login}},
		"stranger":  {"public": {ok, deny, deny}, "private": {hide, hide, hide}},
		"reader":    {"public": {ok, deny, deny}, "private": {ok, deny, deny}},
		"writer":    {"public": {ok, ok, deny}, "private": {ok, ok, deny}},
		"repoadmin": {"public": {ok, ok, ok}, "private": {ok, ok, ok}},
		"owner":     {"public": {ok, ok, ok}, "private": {ok, ok, ok}},
		"siteadmin": {"public": {ok, ok, ok}, "private": {ok, ok, ok}},
	}
	code := func(err error) string {
		switch {
		case err == nil:
			return ok
		case assert.ObjectsAreEqual(err, forge.ErrNotFound):
			return hide
		case assert.ObjectsAreEqual(err, forge.ErrLoginRequired):
			return login
		case assert.ObjectsAreEqual(err, forge.ErrForbidden):
			return deny
		}
		return err.Error()
	}
	for who, byVis := range want {
		var p *forge.Principal
		if who != "anonymous" {
			p = &forge.Principal{User: w.users[who]}
		}
		for vis, results := range byVis {
			for i, a := range []forge.Action{forge.ActionRead, forge.ActionWrite, forge.ActionAdmin} {
				t.Run(fmt.Sprintf("%s/%s/%d", who, vis, a), func(t *testing.T) {
					assert.Equal(t, results[i], code(w.f.Can(ctx, p, "owner", vis, a)))
				})
			}
		}
	}
	// A missing repository answers like a private one.
	assert.Equal(t, hide, code(w.f.Can(ctx, &forge.Principal{User: w.users["stranger"]}, "owner", "missing", forge.ActionRead)))
	assert.Equal(t, login, code(w.f.Can(ctx, nil, "owner", "missing", forge.ActionRead)))
	// A read token of the owner cannot push.
	assert.Equal(t, deny, code(w.f.Can(ctx, &forge.Principal{User: w.users["owner"], Scope: forge.ScopeRead}, "owner", "private", forge.ActionWrite)))
}

func TestGitThroughTheForge(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	srv := httptest.NewServer(w.f.GitHandler())
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	url := func(user, pass, repo string) string {
		if user == "" {
			return srv.URL + "/" + repo
		}
		return "http://" + user + ":" + pass + "@" + host + "/" + repo
	}
	src := filepath.Join(t.TempDir(), "src")
	testenv.BareRepo(t, src, testenv.RepoOptions{Commits: 4})

	// Push-to-create into one's own namespace, private by default.
	testenv.Run(t, src, "push", "-q", url("writer", "password-writer", "writer/fresh.git"), "main")
	w.f.Wait() // the size and push time are recorded after the answer
	info, err := w.f.Meta.RepoInfo(ctx, "writer", "fresh")
	require.NoError(t, err)
	assert.True(t, info.Private)
	assert.Positive(t, info.Size)
	assert.False(t, info.PushedAt.IsZero())
	_, err = testenv.RunErr(t, testenv.Cmd{Dir: src, Args: []string{"push", "-q", url("writer", "password-writer", "owner/other.git"), "main"}})
	assert.Error(t, err, "not into someone else's namespace")

	// Anonymous clone of the new private repository: asked to log in.
	_, err = testenv.RunErr(t, testenv.Cmd{Args: []string{"clone", "-q", url("", "", "writer/fresh.git"), filepath.Join(t.TempDir(), "c")}})
	assert.Error(t, err)
	// A token works as a password.
	tok, err := w.f.CreateToken(ctx, "writer", "ci", forge.ScopeRead, 0)
	require.NoError(t, err)
	testenv.Run(t, "", "clone", "-q", url("x", tok, "writer/fresh.git"), filepath.Join(t.TempDir(), "c2"))

	// Protected branch: no force-push.
	require.NoError(t, w.f.ProtectBranch(ctx, info.ID, "main"))
	work := filepath.Join(t.TempDir(), "work")
	testenv.Run(t, "", "clone", "-q", url("writer", "password-writer", "writer/fresh.git"), work)
	testenv.Run(t, work, "commit", "-q", "--amend", "-m", "rewrite")
	_, err = testenv.RunErr(t, testenv.Cmd{Dir: work, Args: []string{"push", "-q", "--force", "origin", "main"}})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "protected branch: force-push refused")
}

func TestPasswordLoginsAreRemembered(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	req := func(user, pass string) *http.Request {
		r := httptest.NewRequest("GET", "/", nil)
		r.SetBasicAuth(user, pass)
		return r
	}
	p, err := w.f.Authenticate(req("reader", "password-reader"))
	require.NoError(t, err)
	assert.Equal(t, "reader", p.User.Name)
	assert.Equal(t, 1, w.f.LoginCacheLenForTest())
	p, err = w.f.Authenticate(req("READER", "password-reader"))
	require.NoError(t, err)
	assert.Equal(t, "reader", p.User.Name)
	assert.Equal(t, 1, w.f.LoginCacheLenForTest(), "the same login, from the cache")
	_, err = w.f.Authenticate(req("reader", "wrong"))
	assert.ErrorIs(t, err, forge.ErrBadCredentials, "a wrong password is never a cache hit")
	assert.Equal(t, 1, w.f.LoginCacheLenForTest(), "failures are not remembered")
}

// TestAccessAndLevel: Access answers like Can and also gives the
// repository and the most the principal may do; Level does the same
// from metadata already read (a read token is capped at read).
func TestAccessAndLevel(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	p := func(u string) *forge.Principal { return &forge.Principal{User: w.users[u]} }
	for _, tc := range []struct {
		name      string
		who       *forge.Principal
		repo      string
		wantLevel forge.Action
		wantErr   error
	}{
		{"owner", p("owner"), "private", forge.ActionAdmin, nil},
		{"writer", p("writer"), "private", forge.ActionWrite, nil},
		{"reader", p("reader"), "private", forge.ActionRead, nil},
		{"read token of the owner", &forge.Principal{User: w.users["owner"], Scope: forge.ScopeRead}, "private", forge.ActionRead, nil},
		{"stranger on public", p("stranger"), "public", forge.ActionRead, nil},
		{"stranger on private", p("stranger"), "private", 0, forge.ErrNotFound},
		{"anonymous on private", nil, "private", 0, forge.ErrLoginRequired},
		{"missing", p("owner"), "nothing", 0, forge.ErrNotFound},
	} {
		info, level, err := w.f.Access(ctx, tc.who, "owner", tc.repo, forge.ActionRead)
		if tc.wantErr != nil {
			assert.ErrorIs(t, err, tc.wantErr, tc.name)
			assert.Nil(t, info, tc.name)
			continue
		}
		require.NoError(t, err, tc.name)
		assert.Equal(t, tc.repo, info.Name, tc.name)
		assert.Equal(t, tc.wantLevel, level, tc.name)
		assert.Equal(t, tc.wantLevel, w.f.Allowed(ctx, tc.who, info), tc.name)
	}
	priv, _ := w.f.Meta.RepoInfo(ctx, "owner", "private")
	assert.Equal(t, forge.Action(0), w.f.Allowed(ctx, p("stranger"), priv))
	_, _, err := w.f.Access(ctx, p("reader"), "owner", "private", forge.ActionWrite)
	assert.ErrorIs(t, err, forge.ErrForbidden)
}

// TestRightsChangeAtOnce: a remembered git login reads the user again, so
// that demoting or deleting a user takes effect at the next request, and
// a new user of a deleted user's name owns nothing of theirs.
func TestRightsChangeAtOnce(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	srv := httptest.NewServer(w.f.GitHandler())
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	clone := func(user, repo string) error {
		_, err := testenv.RunErr(t, testenv.Cmd{Args: []string{"clone", "-q", "http://" + user + ":password-" + user + "@" + host + "/" + repo, filepath.Join(t.TempDir(), "c")}})
		return err
	}
	require.NoError(t, clone("siteadmin", "owner/private"), "an administrator reads every repository")
	require.NoError(t, w.f.SetAdmin(ctx, "siteadmin", false))
	require.Error(t, clone("siteadmin", "owner/private"), "demoted: refused at the next request, remembered login or not")

	require.NoError(t, clone("owner", "owner/private"))
	require.NoError(t, w.f.DeleteUser(ctx, "owner"))
	require.Error(t, clone("owner", "owner/private"), "deleted: refused at once")
	_, err := w.f.CreateUser(ctx, "owner", "", "password-owner", false)
	require.NoError(t, err)
	require.Error(t, clone("owner", "owner/private"), "the name's new user owns nothing of the old one")
	info, err := w.f.Meta.RepoInfo(ctx, "owner", "private")
	require.NoError(t, err)
	assert.Zero(t, info.OwnerID)
}

func TestPasswordChecksBounded(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.f.MaxPasswordChecks = 1
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	release := w.f.HoldPasswordChecksForTest()
	_, err := w.f.CheckPassword(ctx, "owner", "password-owner")
	assert.ErrorIs(t, err, forge.ErrTooManyPasswordChecks)
	release()
	u, err := w.f.CheckPassword(context.Background(), "owner", "password-owner")
	require.NoError(t, err)
	assert.Equal(t, "owner", u.Name)
	_, err = w.f.CheckPassword(context.Background(), "owner", "wrong")
	assert.ErrorIs(t, err, forge.ErrBadCredentials)
}

// TestDisabledUser: a disabled user's passwords and tokens stop at once,
// remembered logins included; enabling gives them back.
func TestDisabledUser(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	tok, err := w.f.CreateToken(ctx, "reader", "ci", forge.ScopeRead, 0)
	require.NoError(t, err)
	auth := func(pass string) error {
		r := httptest.NewRequest("GET", "/", nil)
		r.SetBasicAuth("reader", pass)
		_, err := w.f.Authenticate(r)
		return err
	}
	require.NoError(t, auth("password-reader")) // remembered now
	require.NoError(t, auth(tok))

	require.NoError(t, w.f.SetDisabled(ctx, "reader", true))
	assert.ErrorIs(t, auth("password-reader"), forge.ErrBadCredentials)
	assert.ErrorIs(t, auth(tok), forge.ErrBadCredentials)
	_, err = w.f.CheckPassword(ctx, "reader", "password-reader")
	assert.ErrorIs(t, err, forge.ErrBadCredentials)
	u, err := w.f.Meta.User(ctx, "reader")
	require.NoError(t, err)
	assert.True(t, u.Disabled)
	assert.ErrorIs(t, w.f.SetDisabled(ctx, "nobody", true), forge.ErrNoUser)

	require.NoError(t, w.f.SetDisabled(ctx, "reader", false))
	assert.NoError(t, auth("password-reader"))
	assert.NoError(t, auth(tok))
}

func TestRestoreRepo(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	r, err := w.f.CreateRepo(ctx, "owner", "proj", false, "public one")
	require.NoError(t, err)
	require.NoError(t, w.f.DeleteRepo(ctx, "owner", "proj"))
	_, err = w.f.Meta.RepoInfo(ctx, "owner", "proj")
	require.ErrorIs(t, err, forge.ErrNotFound)

	back, err := w.f.RestoreRepo(ctx, "owner", "proj")
	require.NoError(t, err)
	assert.True(t, back.Private, "its settings went with it: back as private")
	assert.Equal(t, r.OwnerID, back.OwnerID)
	patterns, err := w.f.Meta.ProtectedBranches(ctx, back.ID)
	require.NoError(t, err)
	assert.Equal(t, []string{back.DefaultBranch}, patterns)
	_, err = w.f.Store.Get("owner", "proj")
	require.NoError(t, err)

	_, err = w.f.RestoreRepo(ctx, "owner", "proj")
	assert.ErrorIs(t, err, forge.ErrExists)
	_, err = w.f.RestoreRepo(ctx, "owner", "never")
	assert.ErrorIs(t, err, forge.ErrNotFound)
}

func TestAuthenticateTokenHeaders(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	tok, err := w.f.CreateToken(context.Background(), "writer", "api", forge.ScopeRead, 0)
	require.NoError(t, err)
	for _, tc := range []struct {
		name, header string
		want         string // user, or "" for an error
	}{
		{"token", "token " + tok, "writer"},
		{"Bearer", "Bearer " + tok, "writer"},
		{"bearer, any case", "bearer " + tok, "writer"},
		{"wrong token", "token fkt_wrong", ""},
		{"a password is no token", "token password-writer", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/", nil)
			r.Header.Set("Authorization", tc.header)
			p, err := w.f.Authenticate(r)
			if tc.want == "" {
				assert.ErrorIs(t, err, forge.ErrBadCredentials)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, p.User.Name)
			assert.Equal(t, forge.ScopeRead, p.Scope)
		})
	}
}
