package forge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
)

// Comparison is what head has that base has not: the commits between
// them and the diff from their merge base, as git's three-dot compare
// shows them (GitHub's compare view).
type Comparison struct {
	Base, Head string // commit ids
	// MergeBase is the best common ancestor; "" when the histories are
	// unrelated, and then the diff is from the empty tree.
	MergeBase string
	// Ahead counts the commits of head that base lacks, Behind those of
	// base that head lacks.
	Ahead, Behind int
	// Commits are head's commits that base lacks, newest first, at most
	// the maxCommits asked for.
	Commits []*CommitInfo
	// Diff is the change from MergeBase to head (its CommitInfo is
	// head's), within the limits asked for.
	Diff *CommitDiff
}

// Compare compares commit head with commit base: the merge base,
// ahead and behind counts, up to maxCommits of the commits between (30
// if zero) and the diff from the merge base to head within lim.
func (b *Browser) Compare(ctx context.Context, base, head string, maxCommits int, lim DiffLimits) (*Comparison, error) {
	hc, err := b.readCommit(ctx, head)
	if err != nil {
		return nil, err
	}
	if _, err := b.readCommit(ctx, base); err != nil {
		return nil, err
	}
	if maxCommits <= 0 {
		maxCommits = 30
	}
	c := &Comparison{Base: base, Head: head}
	if c.MergeBase, err = b.mergeBase(ctx, base, head); err != nil {
		return nil, err
	}
	if c.Ahead, c.Behind, err = b.AheadBehind(ctx, base, head); err != nil {
		return nil, err
	}
	if c.Ahead > 0 {
		out, err := b.output(ctx, "rev-list", "--max-count="+strconv.Itoa(maxCommits), head, "^"+base)
		if err != nil {
			return nil, err
		}
		if c.Commits, err = b.CommitInfos(ctx, strings.Fields(out)); err != nil {
			return nil, err
		}
	}
	c.Diff = &CommitDiff{CommitInfo: hc.CommitInfo, Message: hc.Message}
	if err := b.diffTree(ctx, c.Diff, lim, c.MergeBase, head); err != nil {
		return nil, err
	}
	return c, nil
}

// CompareDiff writes the diff of Compare in full, as git diff
// base...head writes it (from the empty tree for unrelated histories).
func (b *Browser) CompareDiff(ctx context.Context, base, head string, w io.Writer) error {
	mb, err := b.mergeBase(ctx, base, head)
	if err != nil {
		return err
	}
	if mb == "" {
		mb = emptyTree(len(head))
	}
	return b.stream(ctx, w, "diff", mb, head)
}

// AheadBehind counts the commits of head that base lacks (ahead) and
// those of base that head lacks (behind), as git rev-list --left-right
// --count base...head does.
func (b *Browser) AheadBehind(ctx context.Context, base, head string) (ahead, behind int, err error) {
	if base == head {
		return 0, 0, nil
	}
	out, err := b.output(ctx, "rev-list", "--left-right", "--count", base+"..."+head)
	if err != nil {
		return 0, 0, err
	}
	f := strings.Fields(out)
	if len(f) != 2 {
		return 0, 0, fmt.Errorf("forge: git rev-list --count printed %q", out)
	}
	behind, err1 := strconv.Atoi(f[0])
	ahead, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("forge: git rev-list --count printed %q", out)
	}
	return ahead, behind, nil
}

// mergeBase is git merge-base's answer, or "" for unrelated histories.
func (b *Browser) mergeBase(ctx context.Context, x, y string) (string, error) {
	out, err := b.output(ctx, "merge-base", x, y)
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 1 {
		return "", nil // no common ancestor
	}
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(out), nil
}

// output runs git and returns what it printed.
func (b *Browser) output(ctx context.Context, args ...string) (string, error) {
	cmd := b.command(ctx, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		return "", fmt.Errorf("forge: git %s: %w: %s", args[0], err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// CommitInfos reads the commits ids names, in that order.
func (b *Browser) CommitInfos(ctx context.Context, ids []string) ([]*CommitInfo, error) {
	objs, err := b.objects(ctx)
	if err != nil {
		return nil, err
	}
	defer objs.close()
	out := make([]*CommitInfo, 0, len(ids))
	for _, id := range ids {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		c, err := readCommit(objs, plumbing.NewHash(id))
		if err != nil || c.Hash != id {
			return nil, fmt.Errorf("%w: commit %s", ErrNotFound, id)
		}
		out = append(out, c.CommitInfo)
	}
	return out, nil
}

// Tag is a tag with its annotation, if it has one.
type Tag struct {
	Name   string
	Commit string // the commit it points to, peeled
	// Annotated is set for a tag object; then Tagger, When and Message
	// are its own (else When is the commit's).
	Annotated bool
	Tagger    string
	When      time.Time
	Message   string
}

// Tags returns the repository's tags that name commits, newest first
// (by the tag's date, or its commit's for a lightweight tag), with their
// annotations, as git for-each-ref reads them.
func (b *Browser) Tags(ctx context.Context) ([]Tag, error) {
	const sep = "\x1f"
	out, err := b.output(ctx, "for-each-ref", "--sort=-creatordate", "refs/tags",
		"--format=%(refname:strip=2)"+sep+"%(objecttype)"+sep+"%(*objecttype)"+sep+"%(objectname)"+sep+"%(*objectname)"+sep+
			"%(creatordate:unix)"+sep+"%(taggername)"+sep+"%(contents)%00")
	if err != nil {
		return nil, err
	}
	var tags []Tag
	for _, rec := range strings.Split(out, "\x00") {
		rec = strings.TrimPrefix(rec, "\n")
		f := strings.SplitN(rec, sep, 8)
		if len(f) != 8 {
			continue
		}
		t := Tag{Name: f[0]}
		switch {
		case f[1] == "commit":
			t.Commit = f[3]
		case f[1] == "tag" && f[2] == "commit":
			msg, _, _ := strings.Cut(f[7], "-----BEGIN PGP SIGNATURE-----")
			t.Commit, t.Annotated, t.Tagger, t.Message = f[4], true, f[6], strings.TrimRight(msg, "\n")
		default:
			continue // a tag of a tree or a blob, or of a tag of one
		}
		if sec, err := strconv.ParseInt(f[5], 10, 64); err == nil {
			t.When = time.Unix(sec, 0).UTC()
		}
		tags = append(tags, t)
	}
	return tags, nil
}
