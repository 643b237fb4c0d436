package forge

import (
	"bytes"
	"fmt"
	"html/template"
	"strings"

	"github.com/alecthomas/chroma/v2"
	chromahtml "github.com/alecthomas/chroma/v2/formatters/html"
	"github.com/alecthomas/chroma/v2/lexers"
	"github.com/alecthomas/chroma/v2/styles"
	"github.com/yuin/goldmark"
	"github.com/yuin/goldmark/extension"
)

// markdown is goldmark with GitHub Flavored Markdown. Raw HTML in the
// source is left out (goldmark's default), so a README cannot inject
// script into the forge's pages.
var markdown = goldmark.New(goldmark.WithExtensions(extension.GFM))

// RenderMarkdown renders a README (or any Markdown) to safe HTML.
func RenderMarkdown(src []byte) (template.HTML, error) {
	var b bytes.Buffer
	if err := markdown.Convert(src, &b); err != nil {
		return "", fmt.Errorf("forge: markdown: %w", err)
	}
	return template.HTML(b.String()), nil
}

// highlighter renders with CSS classes (the page's stylesheet picks the
// colours, see HighlightCSS) and linkable line numbers: #L12 jumps to line
// 12, as on other forges.
var highlighter = chromahtml.New(chromahtml.WithClasses(true), chromahtml.WithLineNumbers(true),
	chromahtml.WithLinkableLineNumbers(true, "L"), chromahtml.LineNumbersInTable(true))

// Highlight renders src, the file called name, as highlighted HTML; the
// language comes from the name, then the content, then plain text.
func Highlight(name string, src []byte) (template.HTML, error) {
	lexer := lexers.Match(name)
	if lexer == nil {
		lexer = lexers.Analyse(string(src))
	}
	if lexer == nil {
		lexer = lexers.Fallback
	}
	it, err := chroma.Coalesce(lexer).Tokenise(nil, string(src))
	if err != nil {
		return "", fmt.Errorf("forge: highlight: %w", err)
	}
	var b bytes.Buffer
	if err := highlighter.Format(&b, styles.Get("github"), it); err != nil {
		return "", fmt.Errorf("forge: highlight: %w", err)
	}
	return template.HTML(b.String()), nil
}

// HighlightCSS returns the stylesheet for Highlight's classes.
func HighlightCSS() string {
	var b bytes.Buffer
	highlighter.WriteCSS(&b, styles.Get("github"))
	return b.String()
}

// readmeNames in order of preference.
var readmeNames = []string{"readme.md", "readme.markdown", "readme", "readme.txt", "readme.rst"}

// FindReadme picks the README among a directory's entries.
func FindReadme(entries []Entry) (Entry, bool) {
	for _, want := range readmeNames {
		for _, e := range entries {
			if e.Type == "blob" && strings.EqualFold(e.Name, want) {
				return e, true
			}
		}
	}
	return Entry{}, false
}

// IsMarkdown reports whether a file name is Markdown.
func IsMarkdown(name string) bool {
	n := strings.ToLower(name)
	return strings.HasSuffix(n, ".md") || strings.HasSuffix(n, ".markdown")
}

// HighlightLines highlights lines of the file called name, such as the
// lines of a file or of a diff, and returns each line's HTML: spans with
// Highlight's classes (inside an element of class "chroma"), none for
// whitespace and plain text, one per run of a class, so that the HTML
// stays within a few times the source. The lines are lexed as one text,
// so that a string or comment across lines keeps its colour; the
// language comes from the name, else from the content. Lines no lexer
// knows come back escaped.
func HighlightLines(name string, lines []string) []template.HTML {
	out := make([]template.HTML, len(lines))
	text := strings.Join(lines, "\n") + "\n"
	lexer := lexers.Match(name)
	if lexer == nil && len(lines) > 0 {
		lexer = lexers.Analyse(text[:min(len(text), 4096)])
	}
	var it chroma.Iterator
	if lexer != nil {
		it, _ = chroma.Coalesce(lexer).Tokenise(nil, text)
	}
	if it == nil {
		for i, l := range lines {
			out[i] = template.HTML(template.HTMLEscapeString(l))
		}
		return out
	}
	var b strings.Builder
	open := "" // the class of the span open on this line
	emit := func(class, s string) {
		if s == "" {
			return
		}
		if class != open {
			if open != "" {
				b.WriteString("</span>")
			}
			if class != "" {
				b.WriteString(`<span class="` + class + `">`)
			}
			open = class
		}
		b.WriteString(template.HTMLEscapeString(s))
	}
	i := 0
	for tok := it(); tok != chroma.EOF && i < len(lines); tok = it() {
		class := tokenClass(tok.Type)
		v := tok.Value
		for {
			before, after, nl := strings.Cut(v, "\n")
			if strings.TrimSpace(before) == "" {
				emit(open, before) // whitespace keeps the open span
			} else {
				emit(class, before)
			}
			if !nl {
				break
			}
			if open != "" {
				b.WriteString("</span>")
				open = ""
			}
			out[i] = template.HTML(b.String())
			b.Reset()
			if i++; i == len(lines) {
				break
			}
			v = after
		}
	}
	return out
}

// tokenClass is the CSS class chroma's HTML formatter gives tt: its
// own, or its category's.
func tokenClass(tt chroma.TokenType) string {
	if tt == chroma.Text || tt == chroma.TextWhitespace || tt == chroma.Whitespace {
		return ""
	}
	for _, t := range []chroma.TokenType{tt, tt.SubCategory(), tt.Category()} {
		if c, ok := chroma.StandardTypes[t]; ok {
			return c
		}
	}
	return ""
}
