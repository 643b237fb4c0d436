package forge_test

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/forgekit/forgekit/forge"
)

func ExampleStore() {
	root, _ := os.MkdirTemp("", "forge")
	defer os.RemoveAll(root)
	s, err := forge.NewStore(root)
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx := context.Background()
	if _, err := s.Create(ctx, "alice", "proj"); err != nil {
		fmt.Println(err)
		return
	}
	_, err = s.Create(ctx, "Alice", "Proj")
	fmt.Println(errors.Is(err, forge.ErrExists))
	fmt.Println(forge.CheckName("proj.git"))

	s.Delete(ctx, "alice", "proj") // into the trash
	r, _ := s.Restore(ctx, "alice", "proj")
	fmt.Println(r.Owner + "/" + r.Name)
	// Output:
	// true
	// forge: invalid name "proj.git": ends in ".git"
	// alice/proj
}
