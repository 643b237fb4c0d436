package timebox_test

import (
	"bufio"
	"context"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/forgekit/forgekit/internal/testenv"
	"github.com/forgekit/forgekit/timebox"
)

// alive reports whether pid is a live (not zombie) process.
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The state follows the parenthesized command name.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] != 'Z' && s[i+2] != 'X'
}

func TestCommandStopsTheWholeGroup(t *testing.T) {
	t.Parallel()
	sh := testenv.Binary(t, "sh", "dash")
	for _, tc := range []struct {
		name   string
		script string
		want   error
	}{
		// The grandchild is a background sleep; the child waits on it.
		{name: "SIGTERM suffices", script: "sleep 1000 & echo $!; wait", want: timebox.ErrTerminated},
		// Everything ignores SIGTERM: SIGKILL after the grace period.
		{name: "SIGKILL needed", script: "trap '' TERM; sleep 1000 & echo $!; wait; wait", want: timebox.ErrKilled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var grandchild, child int
			err := timebox.Box{Name: "script", Limit: 300 * time.Millisecond}.Do(context.Background(), func(ctx context.Context) error {
				cmd := timebox.Command(ctx, sh, "-c", tc.script)
				cmd.Grace = 200 * time.Millisecond
				out, err := cmd.StdoutPipe()
				require.NoError(t, err)
				require.NoError(t, cmd.Start())
				child = cmd.Process.Pid
				line, _ := bufio.NewReader(out).ReadString('\n')
				grandchild, _ = strconv.Atoi(strings.TrimSpace(line))
				return cmd.Wait()
			})
			require.Error(t, err)
			assert.ErrorIs(t, err, tc.want)
			assert.ErrorIs(t, err, timebox.ErrExpired, "the cause is the box that expired")
			require.Positive(t, grandchild)
			assert.False(t, alive(child), "child left running")
			deadline := time.Now().Add(10 * time.Second)
			for alive(grandchild) && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			assert.False(t, alive(grandchild), "grandchild %d left running", grandchild)
			// Our own child is reaped: no zombie.
			_, err = os.Stat("/proc/" + strconv.Itoa(child))
			assert.True(t, os.IsNotExist(err) || !alive(child))
			var ws syscall.WaitStatus
			_, werr := syscall.Wait4(child, &ws, syscall.WNOHANG, nil)
			assert.Error(t, werr, "child must already be reaped")
		})
	}
}

func TestCommandCompletes(t *testing.T) {
	t.Parallel()
	sh := testenv.Binary(t, "sh", "dash")
	out, err := timebox.Command(context.Background(), sh, "-c", "echo hi").Output()
	require.NoError(t, err)
	assert.Equal(t, "hi\n", string(out))
	_, err = timebox.Command(context.Background(), sh, "-c", "exit 3").CombinedOutput()
	assert.Error(t, err)
	assert.NotErrorIs(t, err, timebox.ErrTerminated)

	// OnExit hears of the run once, with its duration, failed or not.
	var runs []time.Duration
	cmd := timebox.Command(context.Background(), sh, "-c", "exit 3")
	cmd.OnExit = func(d time.Duration) { runs = append(runs, d) }
	assert.Error(t, cmd.Run())
	require.Len(t, runs, 1)
	assert.Positive(t, runs[0])
}
