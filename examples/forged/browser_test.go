package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/forgekit/forgekit/internal/testenv"
)

// TestBrowser drives headless Chromium through the forms: sign in,
// create a repository, and, after a push, the repository page, whose
// script fills in the last commits and copies the clone URL. The
// screenshot goes to $FORGEKIT_SCREENSHOTS when set.
func TestBrowser(t *testing.T) {
	chrome := testenv.Binary(t, "chromium", "chromium")
	f := newForge(t)
	f.s.repo.pageBudget = time.Nanosecond // the last commits come from the script
	f.user("alice")
	tok := f.token("alice")

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chrome),
		chromedp.NoSandbox, // root in a test sandbox
		chromedp.WindowSize(1280, 900),
		chromedp.UserDataDir(t.TempDir()),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancelTimeout := context.WithTimeout(ctx, 2*time.Minute)
	defer cancelTimeout()

	var created string
	require.NoError(t, chromedp.Run(ctx,
		chromedp.Navigate(f.ts.URL+"/login"),
		chromedp.SendKeys(`input[name=name]`, "alice"),
		chromedp.SendKeys(`input[name=password]`, "alice-password"),
		chromedp.Submit(`input[name=password]`),
		chromedp.WaitVisible(`a[href="/new"]`),
		chromedp.Click(`a[href="/new"]`),
		chromedp.WaitVisible(`input[name=description]`),
		chromedp.SendKeys(`input[name=name]`, "webproj"),
		chromedp.SendKeys(`input[name=description]`, "Made in a browser"),
		chromedp.Submit(`input[name=name]`),
		chromedp.WaitVisible(`section.empty`),
		chromedp.Location(&created),
	))
	assert.Equal(t, f.ts.URL+"/alice/webproj", created)

	f.pushSample("alice/webproj", "alice", tok)
	var shot []byte
	var files, copied string
	require.NoError(t, chromedp.Run(ctx,
		chromedp.Navigate(f.ts.URL+"/alice/webproj"),
		chromedp.WaitVisible(`article.readme`),
		// The script swaps the partial list for the complete one.
		chromedp.WaitVisible(`table.files:not([data-fill])`),
		chromedp.Text(`table.files`, &files),
		chromedp.Click(`button.copy`),
		chromedp.Text(`button.copy`, &copied),
		chromedp.FullScreenshot(&shot, 100),
	))
	assert.Contains(t, files, "Say <b>hi</b>", "the last commit of src, filled in by the script")
	assert.Equal(t, "Copied", copied)
	assert.Greater(t, len(shot), 10000)

	// Blame from the file page (past the page budget it comes after a
	// reload, without a script); the branches tab, where a writer
	// deletes a branch through its form; a comparison picked with the
	// compare form; the tags tab.
	var blamed, branches, compared, tags string
	require.NoError(t, chromedp.Run(ctx,
		chromedp.Navigate(f.ts.URL+"/alice/webproj/blob/main/src/main.go"),
		chromedp.Click(`.blobbar a[href$="/blame/main/src/main.go"]`),
		chromedp.WaitVisible(`table.blame`),
		chromedp.Text(`table.blame`, &blamed),
		chromedp.Click(`nav.tabs a[href="/alice/webproj/branches"]`),
		chromedp.WaitVisible(`table.reflist`),
		chromedp.Click(`button[value$=" feature/login"]`),
		chromedp.WaitNotPresent(`button[value$=" feature/login"]`),
		chromedp.Text(`table.reflist`, &branches),
		chromedp.Click(`nav.tabs a[href="/alice/webproj/compare"]`),
		chromedp.WaitVisible(`form.compare`),
		chromedp.SetValue(`input[name=head]`, "v1.0"),
		chromedp.Submit(`input[name=head]`),
		chromedp.WaitVisible(`.comparison`),
		chromedp.Text(`.comparison`, &compared),
		chromedp.Click(`nav.tabs a[href="/alice/webproj/tags"]`),
		chromedp.WaitVisible(`ol.taglist`),
		chromedp.Text(`ol.taglist`, &tags),
	))
	// Code search from the box in the header, once the push is indexed.
	require.Eventually(t, func() bool {
		return strings.Contains(f.browser().get("/search?q=println").body, "src/main.go")
	}, 20*time.Second, 20*time.Millisecond)
	var found string
	require.NoError(t, chromedp.Run(ctx,
		chromedp.SendKeys(`form.navsearch input[name=q]`, "println"),
		chromedp.Submit(`form.navsearch input[name=q]`),
		chromedp.WaitVisible(`section.hit mark`),
		chromedp.Text(`section.hit`, &found),
	))
	assert.Contains(t, found, "src/main.go")
	var repos string
	require.NoError(t, chromedp.Run(ctx,
		chromedp.Navigate(f.ts.URL+"/explore"),
		chromedp.SendKeys(`form.search input[name=q]`, "webproj"),
		chromedp.Submit(`form.search input[name=q]`),
		// The list is on the page before the search too: wait for the
		// answer's own query box.
		chromedp.WaitVisible(`form.search input[value="webproj"]`),
		chromedp.WaitVisible(`ol.repos`),
		chromedp.Text(`ol.repos`, &repos),
	))
	assert.Contains(t, repos, "alice/webproj")
	assert.Contains(t, blamed, "println")
	assert.NotContains(t, branches, "feature/login", "deleted")
	assert.Contains(t, branches, "main")
	assert.Contains(t, compared, "0 commits ahead")
	assert.Contains(t, tags, "v1.0")
	if dir := os.Getenv("FORGEKIT_SCREENSHOTS"); dir != "" {
		require.NoError(t, os.WriteFile(filepath.Join(dir, "repo.png"), shot, 0o644))
		var blob []byte
		require.NoError(t, chromedp.Run(ctx,
			chromedp.Navigate(f.ts.URL+"/alice/webproj/blob/main/src/main.go"),
			chromedp.WaitVisible(`.code`),
			chromedp.FullScreenshot(&blob, 100),
		))
		require.NoError(t, os.WriteFile(filepath.Join(dir, "blob.png"), blob, 0o644))
		var commit []byte
		require.NoError(t, chromedp.Run(ctx,
			chromedp.Navigate(f.ts.URL+"/alice/webproj/commits/main"),
			chromedp.Click(`ol.log li a.sha`),
			chromedp.WaitVisible(`pre.patch`),
			chromedp.FullScreenshot(&commit, 100),
		))
		require.NoError(t, os.WriteFile(filepath.Join(dir, "commit.png"), commit, 0o644))
	}
	// Signing up, where registration is open.
	g := newForge(t, "-registration", "open")
	var home string
	require.NoError(t, chromedp.Run(ctx,
		chromedp.Navigate(g.ts.URL+"/login"),
		chromedp.Click(`a[href="/register"]`),
		chromedp.WaitVisible(`input[name=confirm]`),
		chromedp.SendKeys(`input[name=name]`, "newcomer"),
		chromedp.SendKeys(`input[name=password]`, "a long password"),
		chromedp.SendKeys(`input[name=confirm]`, "a long password"),
		chromedp.Submit(`input[name=confirm]`),
		chromedp.WaitVisible(`a[href="/settings"]`),
		chromedp.Location(&home),
	))
	assert.Equal(t, g.ts.URL+"/newcomer", home)
	require.NoError(t, chromedp.Cancel(ctx))
}
