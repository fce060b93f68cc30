package conformance

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// recorder is a testing.TB that records Errorf calls instead of failing, so
// the harness's own checks can be shown to fire.
type recorder struct {
	testing.TB
	mu   sync.Mutex
	errs []string
}

func (r *recorder) Helper() {}

func (r *recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func (r *recorder) joined() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.errs, "\n")
}

// wrapper writes a shell script that runs the real plugin with extra steps.
func wrapper(t *testing.T, before, after string) string {
	inner := PluginPath(t)
	p := filepath.Join(t.TempDir(), "wrapped-plugin")
	script := fmt.Sprintf("#!/bin/sh\n%s\n%q &\nwait $!\n%s\n", before, inner, after)
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestHarnessCatchesLingeringStdio: a process that keeps the plugin's stdout
// and stderr open after Shutdown (like a task that inherited them) must fail
// the 2 s exit check.
func TestHarnessCatchesLingeringStdio(t *testing.T) {
	t.Parallel()
	in := LaunchPath(t, wrapper(t, "", "sleep 5"))
	checkPluginInfo(t, in)
	rec := &recorder{TB: t}
	in.MustKillGracefully(rec)
	if !strings.Contains(rec.joined(), "did not exit within") {
		t.Errorf("MustKillGracefully did not flag a plugin that outlived Shutdown; recorded: %q", rec.joined())
	}
}

// TestHarnessCatchesNonJSONStderr: a plain-text stderr line must be flagged.
func TestHarnessCatchesNonJSONStderr(t *testing.T) {
	t.Parallel()
	in := LaunchPath(t, wrapper(t, `echo "starting up" >&2
echo '{"@level":"warning","@message":"x","@timestamp":"2026-01-01T00:00:00Z"}' >&2`, ""))
	checkPluginInfo(t, in)
	in.MustKillGracefully(t)
	rec := &recorder{TB: t}
	checkStderrLines(rec, in.Stderr.String())
	got := rec.joined()
	for _, want := range []string{"not a JSON object", `"warning" is not one of`, "does not match"} {
		if !strings.Contains(got, want) {
			t.Errorf("checkStderrLines did not report %q; recorded: %q", want, got)
		}
	}
}

// TestHarnessCatchesPipesHeldAfterSIGKILL: a child that inherited the
// plugin's stdout/stderr (as a task or monitor started carelessly would) keeps
// go-plugin from seeing the plugin exit; the point-6 check must say so and
// name the holder.
func TestHarnessCatchesPipesHeldAfterSIGKILL(t *testing.T) {
	t.Parallel()
	pidFile := filepath.Join(t.TempDir(), "holder.pid")
	script := filepath.Join(t.TempDir(), "leaky-plugin")
	body := fmt.Sprintf("#!/bin/sh\nsleep 30 &\necho $! > %q\nexec %q\n", pidFile, PluginPath(t))
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	in := LaunchPath(t, script)
	t.Cleanup(func() {
		raw, _ := os.ReadFile(pidFile)
		var pid int
		if _, err := fmt.Sscanf(string(raw), "%d", &pid); err == nil && pid > 0 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	checkPluginInfo(t, in)
	rec := &recorder{TB: t}
	if in.sigkillSeenExited(rec, 1500*time.Millisecond) {
		t.Errorf("sigkillSeenExited passed although a child holds the plugin's pipes")
	}
	if got := rec.joined(); !strings.Contains(got, "sleep 30") {
		t.Errorf("the report does not name the holder; recorded: %q", got)
	}
}
