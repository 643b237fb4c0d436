package forge

import (
	"context"
	"fmt"
	"os/exec"
	"strings"

	"github.com/forgekit/forgekit/gitproto"
)

// DeleteBranch deletes branch of owner/name for p, as a push deleting it
// would: p must be allowed to write (else the errors of Access), the
// branch must not be protected nor the default (ErrProtected), and it
// must still point at commit old if old is not empty (a page's stale
// view deletes nothing; ErrNoBranch). The OnPush listeners and the
// webhooks hear of it as of a push.
func (f *Forge) DeleteBranch(ctx context.Context, p *Principal, owner, name, branch, old string) error {
	r, _, err := f.Access(ctx, p, owner, name, ActionWrite)
	if err != nil {
		return err
	}
	repo, err := f.Store.Get(r.Owner, r.Name)
	if err != nil {
		return err
	}
	if head, _ := ReadHead(repo.Dir); branch == head || branch == r.DefaultBranch {
		return fmt.Errorf("%w: %s is the default branch", ErrProtected, branch)
	}
	patterns, err := f.Meta.ProtectedBranches(ctx, r.ID)
	if err != nil {
		return err
	}
	if protected(branch, patterns) {
		return fmt.Errorf("%w: %s", ErrProtected, branch)
	}
	ref := "refs/heads/" + branch
	cmd := exec.CommandContext(ctx, f.Store.git(), "-C", repo.Dir, "rev-parse", "--verify", "--quiet", ref+"^{commit}")
	cmd.Env = cleanGitEnv()
	out, err := cmd.Output()
	cur := strings.TrimSpace(string(out))
	if err != nil || cur == "" || (old != "" && old != cur) {
		return fmt.Errorf("%w: %s", ErrNoBranch, branch)
	}
	if err := f.Store.run(ctx, repo.Dir, "update-ref", "-d", ref, cur); err != nil {
		return err
	}
	zero := strings.Repeat("0", len(cur))
	f.afterPush(ctx, r, repo.Dir, p.User.Name, []gitproto.RefUpdate{{Old: cur, New: zero, Ref: ref}},
		func(string, string) bool { return false })
	return nil
}
