package conformance

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/types/dynamicpb"
)

// TestPluginKilledMidTask (point 6): the plugin is SIGKILLed with two tasks
// running. go-plugin must see it exit (nothing it started, conmon or the
// containers, may hold the plugin's stdout/stderr pipes); the tasks keep
// running and writing to their FIFOs; one exits (code 7) while no plugin
// runs. A new plugin process takes both back with RecoverTask (twice each,
// task_id empty as the agent sends it), WaitTask gives the true exit code of
// the one that exited unseen, and the other is stopped and reports its own.
func TestPluginKilledMidTask(t *testing.T) {
	t.Parallel()
	dataDir := newDataDir(t)
	image := testImage(t)
	old := launchReal(t, dataDir)

	long := newAlloc(t, "long")
	longID, longHandle := old.startTask(t, long, shTask(image,
		`trap 'echo got TERM; exit 40' TERM; i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.2; done`))
	short := newAlloc(t, "short")
	shortID, shortHandle := old.startTask(t, short, shTask(image, `echo started; sleep 3; echo exiting; exit 7`))
	short.stdout.WaitFor(t, "started\n", 10*time.Second)
	long.stdout.WaitFor(t, "tick 1\n", 10*time.Second)

	if short.stdout.Closed() || strings.Contains(short.stdout.Snapshot(), "exiting") {
		t.Fatalf("the short task exited before the plugin was killed; the test proves nothing (slow StartTask?)")
	}
	if !old.sigkillSeenExited(t, 3*time.Second) {
		t.FailNow()
	}

	// While no plugin runs: the short task exits on its own, the long one
	// keeps writing.
	ticks := strings.Count(long.stdout.Snapshot(), "tick")
	if out := short.stdout.Text(t, 15*time.Second); out != "started\nexiting\n" {
		t.Errorf("short task's stdout = %q", out)
	}
	if n := strings.Count(long.stdout.Snapshot(), "tick"); n <= ticks {
		t.Errorf("the long task wrote nothing while the plugin was dead (%d ticks before, %d after)", ticks, n)
	}
	if long.stdout.Closed() {
		t.Fatalf("the long task's stdout FIFO closed while the plugin was dead: %q", long.stdout.Snapshot())
	}

	fresh := launchReal(t, dataDir)
	for _, h := range []struct {
		id     string
		handle *dynamicpb.Message
	}{{longID, longHandle}, {shortID, shortHandle}} {
		for i := 1; i <= 2; i++ {
			if err := fresh.recoverTask(t, h.handle); err != nil {
				t.Fatalf("RecoverTask #%d of %s: %v", i, h.id, err)
			}
		}
	}

	if res := recvWait(t, fresh.waitTask(shortID, 30*time.Second), shortID, 30*time.Second); res.code != 7 || res.signal != 0 || res.err != "" {
		t.Errorf("WaitTask after recovery of the task that exited unseen = %+v, want exit 7", res)
	}

	if st := fresh.inspect(t, longID); st["state"] != "RUNNING" {
		t.Errorf("InspectTask of the recovered long task: state %v, want RUNNING", st["state"])
	}
	samples := fresh.collectStats(t, longID, "0.250s", 2)
	if !samples[1].at.After(samples[0].at) || samples[1].agg == nil {
		t.Errorf("TaskStats of a recovered task: timestamps %v, %v; agg set: %v",
			samples[0].at, samples[1].at, samples[1].agg != nil)
	}
	wait := fresh.waitTask(longID, 60*time.Second)
	fresh.stopTask(t, longID, "SIGTERM", "5s")
	if res := recvWait(t, wait, longID, 15*time.Second); res.code != 40 || res.signal != 0 {
		t.Errorf("WaitTask of the recovered long task after StopTask = %+v, want exit 40", res)
	}
	if out := long.stdout.Text(t, 10*time.Second); !strings.HasSuffix(out, "got TERM\n") {
		t.Errorf("long task's stdout does not end with its TERM trap: ...%q", tail(out, 60))
	}

	for _, id := range []string{shortID, longID} {
		fresh.destroyTask(t, id, true)
		fresh.destroyTask(t, id, true)
	}
	fresh.MustKillGracefully(t)
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}

// sigkillSeenExited SIGKILLs the plugin process and waits up to budget for
// go-plugin to see it exit, which needs EOF on the plugin's stdout and stderr
// pipes; if it does not, it reports which processes still hold them.
func (in *Instance) sigkillSeenExited(t testing.TB, budget time.Duration) bool {
	t.Helper()
	pid := in.Client.ReattachConfig().Pid
	pipes := []string{pipeInode(pid, 1), pipeInode(pid, 2)}
	killedAt := time.Now()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Errorf("kill -9 %d: %v", pid, err)
		return false
	}
	in.killed = true
	for !in.Client.Exited() && time.Since(killedAt) < budget {
		time.Sleep(10 * time.Millisecond)
	}
	if !in.Client.Exited() {
		var held []string
		for _, p := range pipes {
			held = append(held, p+" held by "+strings.Join(holders(p), ", "))
		}
		t.Errorf("go-plugin does not see the SIGKILLed plugin exit after %v: its stdout/stderr pipes are "+
			"still open elsewhere (%s)", budget, strings.Join(held, "; "))
		return false
	}
	t.Logf("go-plugin saw the plugin exit %v after SIGKILL", time.Since(killedAt).Round(time.Millisecond))
	return true
}
