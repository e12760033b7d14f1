package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
)

// execIn runs a command in the workspace with containerd directly (runc
// exec), independent of berth, to check what berth claims.
func (e *env) execIn(t *testing.T, bot string, args ...string) string {
	t.Helper()
	out, err := e.tryExec(t, bot, args...)
	if err != nil {
		t.Fatalf("exec %v in %s: %v (output %q)", args, bot, err, out)
	}
	return out
}

var execSeq int

func (e *env) tryExec(t *testing.T, bot string, args ...string) (string, error) {
	t.Helper()
	c := testenv.Client(t)
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), e.namespace), time.Minute)
	defer cancel()
	ctr, err := c.LoadContainer(ctx, bot)
	if err != nil {
		return "", err
	}
	task, err := ctr.Task(ctx, nil)
	if err != nil {
		return "", err
	}
	spec, err := ctr.Spec(ctx)
	if err != nil {
		return "", err
	}
	pspec := *spec.Process
	pspec.Args = args
	pspec.Terminal = false
	// The shim writes output straight to a file: FIFO copies can lose
	// the output of very short commands.
	execSeq++
	logPath := filepath.Join(t.TempDir(), "exec.log")
	proc, err := task.Exec(ctx, fmt.Sprintf("e2e-%d", execSeq), &pspec, cio.LogFile(logPath))
	if err != nil {
		return "", err
	}
	status, err := proc.Wait(ctx)
	if err != nil {
		return "", err
	}
	if err := proc.Start(ctx); err != nil {
		proc.Delete(ctx)
		return "", err
	}
	st := <-status
	// Deleting the process waits for the shim to finish copying its output.
	// (No WithProcessKill: it would kill every process in the container.)
	if _, err := proc.Delete(ctx); err != nil {
		return "", err
	}
	out, _ := os.ReadFile(logPath)
	if st.ExitCode() != 0 {
		return string(out), fmt.Errorf("exit code %d", st.ExitCode())
	}
	return string(out), nil
}
