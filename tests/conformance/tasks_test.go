package conformance

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/status"
)

// TestTaskLifecycle (point 5): a real container through the agent's calls in
// the agent's order. StartTask with logmon-style FIFO readers already open;
// WaitTask opened at once and still pending while the task runs; TaskStats
// gives rising samples with agg_resource_usage; StopTask delivers the signal
// and the task's own exit code comes back from WaitTask; stdout and stderr
// arrive separately and the FIFOs reach EOF; DestroyTask twice.
func TestTaskLifecycle(t *testing.T) {
	t.Parallel()
	p := launchReal(t, newDataDir(t))
	a := newAlloc(t, "web")
	// /local is written before out-1, so seeing out-1 means the file is there.
	script := `echo written > /local/from-task; echo out-1; echo err-1 >&2; ` +
		`test -d /alloc/logs && test -d /secrets || echo "alloc dirs missing" >&2; ` +
		`trap 'echo got TERM; exit 42' TERM; while :; do :; done`
	id, _ := p.startTask(t, a, shTask(testImage(t), script))
	wait := p.waitTask(id, 60*time.Second)

	a.stdout.WaitFor(t, "out-1\n", 10*time.Second)
	got, err := os.ReadFile(filepath.Join(a.dir, "web", "local", "from-task"))
	if err != nil || string(got) != "written\n" {
		t.Errorf("the task's /local is not the alloc's web/local: %q, %v", got, err)
	}

	samples := p.collectStats(t, id, "0.300s", 3)
	for i, s := range samples {
		if s.agg == nil {
			t.Errorf("sample %d: agg_resource_usage unset", i)
			continue
		}
		cpu, _ := s.agg["cpu"].(map[string]any)
		mem, _ := s.agg["memory"].(map[string]any)
		if cpu == nil || mem == nil {
			t.Errorf("sample %d: agg_resource_usage lacks cpu or memory: %v", i, s.agg)
			continue
		}
		if l, _ := cpu["measured_fields"].([]any); len(l) == 0 {
			t.Errorf("sample %d: cpu.measured_fields empty", i)
		}
		if l, _ := mem["measured_fields"].([]any); len(l) == 0 {
			t.Errorf("sample %d: memory.measured_fields empty", i)
		}
		if mem["rss"] == "0" && mem["usage"] == "0" {
			t.Errorf("sample %d: memory rss and usage both 0 for a running shell: %v", i, mem)
		}
		if d := time.Since(s.at); d < -5*time.Second || d > time.Minute {
			t.Errorf("sample %d: timestamp %v is %v away from now", i, s.at, d)
		}
		if i > 0 && !s.at.After(samples[i-1].at) {
			t.Errorf("sample %d: timestamp %v does not rise after %v", i, s.at, samples[i-1].at)
		}
	}
	last, _ := samples[len(samples)-1].agg["cpu"].(map[string]any)
	if pct, _ := last["percent"].(float64); pct <= 0 {
		t.Errorf("cpu.percent of a busy loop after %d samples = %v, want > 0 (%v)", len(samples), last["percent"], last)
	} else {
		t.Logf("busy loop: cpu.percent %.0f, total_ticks %v", pct, last["total_ticks"])
	}

	if st := p.inspect(t, id); st["state"] != "RUNNING" {
		t.Errorf("InspectTask of the running task: state %v", st["state"])
	}
	select {
	case w := <-wait:
		t.Fatalf("WaitTask returned while the task was still running: %v %v", AsMap(w.resp), w.err)
	default:
	}

	took := p.stopTask(t, id, "SIGTERM", "5s")
	res := recvWait(t, wait, id, 10*time.Second)
	if res.code != 42 || res.signal != 0 || res.err != "" {
		t.Errorf("after SIGTERM (trapped, exit 42): WaitTask = %+v, want exit 42", res)
	}
	t.Logf("StopTask(SIGTERM, 5s) took %v", took.Round(time.Millisecond))
	if took >= 5*time.Second {
		t.Errorf("StopTask took %v although the task exits on SIGTERM", took)
	}

	if out := a.stdout.Text(t, 10*time.Second); out != "out-1\ngot TERM\n" {
		t.Errorf("stdout via FIFO = %q, want %q", out, "out-1\ngot TERM\n")
	}
	if out := a.stderr.Text(t, 10*time.Second); out != "err-1\n" {
		t.Errorf("stderr via FIFO = %q, want %q", out, "err-1\n")
	}

	st := p.inspect(t, id)
	res2, _ := st["result"].(map[string]any)
	if st["state"] != "EXITED" || res2["exit_code"] != float64(42) {
		t.Errorf("InspectTask after exit: state %v result %v, want EXITED / 42", st["state"], res2)
	}
	if st["completed_at"] == nil || st["started_at"] == nil {
		t.Errorf("InspectTask after exit lacks started_at/completed_at: %v", st)
	}

	// A WaitTask opened after the exit answers at once with the same result.
	if again := recvWait(t, p.waitTask(id, 10*time.Second), id+" (after exit)", 5*time.Second); again.code != 42 {
		t.Errorf("second WaitTask = %+v, want exit 42", again)
	}

	p.destroyTask(t, id, false) // exited: no force needed
	p.destroyTask(t, id, true)  // and again, as the agent may
	if _, err := callFor(t, p.Instance, 10*time.Second, mWaitTask, `{"task_id": "`+id+`"}`); err != nil {
		if st, _ := status.FromError(err); deathCodes[st.Code()] {
			t.Errorf("WaitTask after DestroyTask: %v (read by the agent as plugin death)", err)
		}
	}
	p.MustKillGracefully(t)
}

// TestStopTaskTimeoutEscalates (point 5): a task that ignores the stop signal
// is killed once StopTask's timeout passes; WaitTask reports SIGKILL and the
// FIFOs close (the whole pod, child processes too, is gone).
func TestStopTaskTimeoutEscalates(t *testing.T) {
	t.Parallel()
	p := launchReal(t, newDataDir(t))
	a := newAlloc(t, "stubborn")
	id, _ := p.startTask(t, a, shTask(testImage(t), `trap '' TERM; echo ready; sleep 60`))
	wait := p.waitTask(id, 60*time.Second)
	a.stdout.WaitFor(t, "ready\n", 10*time.Second)

	took := p.stopTask(t, id, "SIGTERM", "1s")
	t.Logf("StopTask(SIGTERM, 1s) on a task ignoring SIGTERM took %v", took.Round(time.Millisecond))
	if took < 900*time.Millisecond || took > 15*time.Second {
		t.Errorf("StopTask took %v, want the 1s timeout and then the kill", took)
	}
	res := recvWait(t, wait, id, 10*time.Second)
	if res.code != 128+9 || res.signal != 9 {
		t.Errorf("WaitTask after the escalation = %+v, want exit 137 signal 9", res)
	}
	if out := a.stdout.Text(t, 10*time.Second); out != "ready\n" {
		t.Errorf("stdout via FIFO = %q", out)
	}
	a.stderr.Text(t, 5*time.Second)
	p.destroyTask(t, id, true)
	p.destroyTask(t, id, true)
	p.MustKillGracefully(t)
}

// TestWaitTaskResultAlwaysSet (points 5 and 7): tasks that exit on their own,
// with 0 (an all-zero result still has to be sent) and with a code; the image's
// own Entrypoint/Cmd when the job names no command.
func TestWaitTaskResultAlwaysSet(t *testing.T) {
	t.Parallel()
	p := launchReal(t, newDataDir(t))
	image := testImage(t)

	a := newAlloc(t, "hello")
	id, _ := p.startTask(t, a, shTask(image, ""))
	res := recvWait(t, p.waitTask(id, 30*time.Second), id, 30*time.Second)
	if res != (exitResult{}) {
		t.Errorf("image default command: WaitTask = %+v, want exit 0", res)
	}
	if out := a.stdout.Text(t, 10*time.Second); !strings.Contains(out, "hello from the test image") {
		t.Errorf("stdout of the image's default command = %q", out)
	}
	p.destroyTask(t, id, true)
	p.destroyTask(t, id, true)

	b := newAlloc(t, "three")
	id, _ = p.startTask(t, b, shTask(image, `echo bye >&2; exit 3`))
	if res := recvWait(t, p.waitTask(id, 30*time.Second), id, 30*time.Second); res.code != 3 || res.signal != 0 {
		t.Errorf("exit 3: WaitTask = %+v", res)
	}
	if out := b.stderr.Text(t, 10*time.Second); out != "bye\n" {
		t.Errorf("stderr via FIFO = %q", out)
	}
	b.stdout.Text(t, 5*time.Second)
	p.destroyTask(t, id, false)
	p.destroyTask(t, id, false)
	p.MustKillGracefully(t)
}
