package forge_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/forgekit/forgekit/forge"
)

func TestRenderMarkdown(t *testing.T) {
	t.Parallel()
	out, err := forge.RenderMarkdown([]byte("# Proj\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n<script>alert(1)</script>\n\n- [x] done\n"))
	require.NoError(t, err)
	s := string(out)
	assert.Contains(t, s, "<h1>Proj</h1>")
	assert.Contains(t, s, "<table>", "GFM tables")
	assert.Contains(t, s, `type="checkbox"`, "GFM task lists")
	assert.NotContains(t, s, "<script>", "raw HTML is left out")
}

func TestHighlight(t *testing.T) {
	t.Parallel()
	out, err := forge.Highlight("main.go", []byte("package main\n\nfunc main() {}\n"))
	require.NoError(t, err)
	s := string(out)
	assert.Contains(t, s, `id="L3"`, "linkable line numbers")
	assert.Contains(t, s, `class="kd"`, "keywords are classified (func)")
	assert.Contains(t, forge.HighlightCSS(), ".chroma")
	plain, err := forge.Highlight("notes", []byte("<b>not html</b>"))
	require.NoError(t, err)
	assert.NotContains(t, string(plain), "<b>", "content is escaped")
}

func TestFindReadme(t *testing.T) {
	t.Parallel()
	e, ok := forge.FindReadme([]forge.Entry{{Name: "readme.txt", Type: "blob"}, {Name: "README.md", Type: "blob"}, {Name: "src", Type: "tree"}})
	require.True(t, ok)
	assert.Equal(t, "README.md", e.Name)
	assert.True(t, forge.IsMarkdown(e.Name))
	_, ok = forge.FindReadme([]forge.Entry{{Name: "README.md", Type: "tree"}})
	assert.False(t, ok)
}

func TestHighlightLines(t *testing.T) {
	t.Parallel()
	lines := []string{"func f() {", "\t/* a comment", "\tacross lines */", `	s := "<b>&"`, "}", ""}
	got := forge.HighlightLines("x.go", lines)
	require.Len(t, got, len(lines))
	assert.Equal(t, `<span class="kd">func </span><span class="nf">f</span><span class="p">() {</span>`, string(got[0]), "one span per run of a class, none for whitespace")
	assert.Contains(t, string(got[2]), `<span class="cm">`, "the comment keeps its class on its second line")
	assert.Contains(t, string(got[3]), "&lt;b&gt;&amp;")
	assert.NotContains(t, string(got[3]), "<b>")
	assert.Empty(t, string(got[5]))

	plain := forge.HighlightLines("unknown.zzz", []string{"<script>", "x"})
	assert.Equal(t, "&lt;script&gt;", string(plain[0]))
	assert.Equal(t, "x", string(plain[1]))
	assert.Empty(t, forge.HighlightLines("x.go", nil))
}
