package conformance

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
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
