package conformance

// Helpers for the tests that run real containers (points 5 and 6): a busybox
// OCI layout built once, Nomad-like alloc dirs whose log FIFOs are read
// continuously like logmon does, a plugin configured with a private data_dir
// and cgroup parent, and the checks that nothing is left behind.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"
)

// cgroupParent is this test binary's own cgroup parent; TestMain removes it
// from every hierarchy and fails the run if anything is left under it.
var cgroupParent = fmt.Sprintf("/nomad-rkt-conformance-%d", os.Getpid())

var (
	imageOnce sync.Once
	imageDir  string // parent of the layout; removed by TestMain
	imageRef  string
	imageErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if imageDir != "" {
		_ = os.RemoveAll(imageDir)
	}
	if left := removeCgroupParent(); len(left) > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: cgroups left under %s: %s\n", cgroupParent, strings.Join(left, ", "))
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// removeCgroupParent rmdirs the parent (after any pod cgroups a failed test
// left, which it reports) in every hierarchy; it returns what it could not
// remove or had to remove on a test's behalf.
func removeCgroupParent() []string {
	var left []string
	dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", strings.TrimPrefix(cgroupParent, "/")))
	dirs = append(dirs, filepath.Join("/sys/fs/cgroup", strings.TrimPrefix(cgroupParent, "/")))
	for _, d := range dirs {
		st, err := os.Lstat(d)
		if err != nil || !st.IsDir() {
			continue
		}
		children, _ := filepath.Glob(filepath.Join(d, "*"))
		for _, c := range children {
			if st, err := os.Stat(c); err == nil && st.IsDir() {
				left = append(left, "pod cgroup "+c)
				_ = syscall.Rmdir(c)
			}
		}
		if err := syscall.Rmdir(d); err != nil && !errors.Is(err, syscall.ENOENT) {
			left = append(left, fmt.Sprintf("%s (%v)", d, err))
		}
	}
	return left
}

// testImage builds the project's standard busybox OCI layout once (with the
// same builder the Python tests use) and returns the task's image reference.
func testImage(t *testing.T) string {
	t.Helper()
	imageOnce.Do(func() {
		imageDir, imageErr = os.MkdirTemp("", "rkt-conformance-image-")
		if imageErr != nil {
			return
		}
		layout := filepath.Join(imageDir, "layout")
		py := filepath.Join(RepoRoot(), ".venv", "bin", "python")
		cmd := exec.Command(py, "-c",
			"import sys; from pathlib import Path; from tests.imagebuild import busybox_image; "+
				"busybox_image(Path(sys.argv[1]), tag='v1')", layout)
		cmd.Dir = RepoRoot()
		cmd.Env = append(os.Environ(), "PYTHONPATH="+RepoRoot())
		if out, err := cmd.CombinedOutput(); err != nil {
			imageErr = fmt.Errorf("building the busybox OCI layout with %s: %v\n%s", py, err, out)
			return
		}
		imageRef = "oci:" + layout + ":v1"
	})
	if imageErr != nil {
		t.Fatal(imageErr)
	}
	return imageRef
}

// hclQuote writes s as an HCL quoted string (no interpolation).
func hclQuote(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`, "\t", `\t`, "${", "$${", "%{", "%%{")
	return `"` + r.Replace(s) + `"`
}

// shTask is a job task block running `/bin/sh -c script` in the test image
// (script "" keeps the image's own Entrypoint/Cmd).
func shTask(image, script string) string {
	var b strings.Builder
	b.WriteString("task \"t\" {\n  driver = \"rkt\"\n  config {\n")
	fmt.Fprintf(&b, "    image            = %s\n", hclQuote(image))
	if script != "" {
		fmt.Fprintf(&b, "    command          = \"/bin/sh\"\n    args             = [\"-c\", %s]\n", hclQuote(script))
	}
	b.WriteString("    net              = [\"none\"]\n    insecure_options = [\"image\"]\n  }\n}\n")
	return b.String()
}

// fifo is logmon's side of a task log FIFO: made before StartTask and read
// continuously from then on (the plugin's O_WRONLY open blocks until then).
type fifo struct {
	path string
	mu   sync.Mutex
	data []byte
	err  error
	done chan struct{} // closed at EOF: every writer has closed its end
}

func newFifo(t *testing.T, path string) *fifo {
	t.Helper()
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatalf("mkfifo %s: %v", path, err)
	}
	f := &fifo{path: path, done: make(chan struct{})}
	go func() {
		defer close(f.done)
		r, err := os.OpenFile(path, os.O_RDONLY, 0)
		if err != nil {
			f.setErr(err)
			return
		}
		defer r.Close()
		buf := make([]byte, 64<<10)
		for {
			n, err := r.Read(buf)
			f.mu.Lock()
			f.data = append(f.data, buf[:n]...)
			f.mu.Unlock()
			if err != nil {
				if !errors.Is(err, io.EOF) {
					f.setErr(err)
				}
				return
			}
		}
	}()
	t.Cleanup(func() {
		// A reader still blocked in open (StartTask never opened the FIFO)
		// is released by a non-blocking writer.
		if w, err := os.OpenFile(path, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			w.Close()
		}
	})
	return f
}

func (f *fifo) setErr(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

// Snapshot is what has been read so far.
func (f *fifo) Snapshot() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return string(f.data)
}

// Closed reports whether the FIFO reached EOF.
func (f *fifo) Closed() bool {
	select {
	case <-f.done:
		return true
	default:
		return false
	}
}

// Text waits for EOF (the task and its monitor closed the FIFO) and returns
// everything read.
func (f *fifo) Text(t *testing.T, d time.Duration) string {
	t.Helper()
	select {
	case <-f.done:
	case <-time.After(d):
		t.Fatalf("log FIFO %s still open by a writer %v later (read so far: %q)", f.path, d, f.Snapshot())
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		t.Errorf("reading log FIFO %s: %v", f.path, f.err)
	}
	return string(f.data)
}

// WaitFor waits until the output read so far contains want.
func (f *fifo) WaitFor(t *testing.T, want string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !strings.Contains(f.Snapshot(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("log FIFO %s: %q not seen within %v (read: %q)", f.path, want, d, f.Snapshot())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// alloc is a Nomad-like allocation directory for one task.
type alloc struct {
	id, task, dir  string
	stdout, stderr *fifo
}

func randHex(t *testing.T, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// newAlloc lays out <alloc>/alloc/{logs,data,tmp} and <alloc>/<task>/{local,
// secrets,tmp} as the client does, with the two log FIFOs being read.
func newAlloc(t *testing.T, task string) *alloc {
	t.Helper()
	a := &alloc{id: randHex(t, 4), task: task}
	a.dir = filepath.Join(t.TempDir(), "alloc-"+a.id)
	for _, sub := range []string{"alloc/logs", "alloc/data", "alloc/tmp", task + "/local", task + "/secrets", task + "/tmp"} {
		if err := os.MkdirAll(filepath.Join(a.dir, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The client makes the task's local dir writable by any task user.
	if err := os.Chmod(filepath.Join(a.dir, task, "local"), 0o777); err != nil {
		t.Fatal(err)
	}
	a.stdout = newFifo(t, filepath.Join(a.dir, "alloc", "logs", "."+task+".stdout.fifo"))
	a.stderr = newFifo(t, filepath.Join(a.dir, "alloc", "logs", "."+task+".stderr.fifo"))
	return a
}

// startReq is the StartTaskRequest the task runner sends for a.
func (a *alloc) startReq(t *testing.T, msgpack []byte) (req, taskID string) {
	t.Helper()
	taskID = fmt.Sprintf("%s/%s/%s", a.id, a.task, randHex(t, 4))
	task := map[string]any{
		"id": taskID, "name": a.task, "msgpack_driver_config": b64(msgpack),
		"env":      map[string]string{"NOMAD_TASK_NAME": a.task, "NOMAD_ALLOC_ID": a.id},
		"alloc_id": a.id, "task_group_name": "g", "job_name": "conformance", "job_id": "conformance",
		"namespace": "default", "alloc_dir": a.dir,
		"stdout_path": a.stdout.path, "stderr_path": a.stderr.path,
		"resources": map[string]any{
			"allocated_resources": map[string]any{"cpu": map[string]any{"cpu_shares": 100},
				"memory": map[string]any{"memory_mb": 64}},
			"linux_resources": map[string]any{"cpu_shares": 100, "memory_limit_bytes": 64 << 20},
		},
	}
	b, err := json.Marshal(map[string]any{"task": task})
	if err != nil {
		t.Fatal(err)
	}
	return string(b), taskID
}

// realPlugin is a launched plugin configured for real tasks.
type realPlugin struct {
	*Instance
	dataDir string
}

// newDataDir makes the plugin's data_dir and registers, before the temp dir's
// own removal, the check that the test left nothing behind.
func newDataDir(t *testing.T) string {
	t.Helper()
	dataDir := filepath.Join(t.TempDir(), "data")
	t.Cleanup(func() {
		if left := leftovers(dataDir); len(left) > 0 {
			t.Errorf("the test left behind: %s", strings.Join(left, "; "))
			cleanUp(dataDir)
		}
	})
	return dataDir
}

// launchReal starts a plugin (sockets in a test-private dir: a SIGKILLed
// plugin cannot remove its own) and configures it with dataDir and the
// run's cgroup parent through the agent's HCL pipeline.
func launchReal(t *testing.T, dataDir string) *realPlugin {
	t.Helper()
	cmd := exec.Command(PluginPath(t))
	cmd.Env = []string{"PLUGIN_UNIX_SOCKET_DIR=" + t.TempDir()}
	in := LaunchCmd(t, cmd)
	block := fmt.Sprintf("plugin \"rkt\" {\n  config {\n    data_dir      = %s\n    cgroup_parent = %s\n  }\n}\n",
		hclQuote(dataDir), hclQuote(cgroupParent))
	mustSetConfig(t, in, encodePlugin(t, in, block), true)
	return &realPlugin{Instance: in, dataDir: dataDir}
}

func callFor(t *testing.T, in *Instance, d time.Duration, path string, req any) (*dynamicpb.Message, error) {
	t.Helper()
	return Invoke(ctxT(t, d), in.Conn, path, req)
}

// startTask runs StartTask for a task block in alloc a and checks the handle
// the agent will persist; it returns the task id and that handle.
func (p *realPlugin) startTask(t *testing.T, a *alloc, block string) (string, *dynamicpb.Message) {
	t.Helper()
	req, id := a.startReq(t, encodeTask(t, p.Instance, block))
	began := time.Now()
	resp, err := callFor(t, p.Instance, 90*time.Second, mStartTask, req)
	if err != nil {
		t.Fatalf("StartTask %s: %v", id, err)
	}
	t.Logf("StartTask %s took %v", id, time.Since(began).Round(time.Millisecond))
	m := AsMap(resp)
	if m["result"] != "SUCCESS" {
		t.Errorf("StartTaskResponse.result = %v (%v)", m["result"], m["driver_error_msg"])
	}
	h := Field(resp, "handle")
	if h == nil {
		t.Fatalf("StartTaskResponse has no handle")
	}
	hm := AsMap(h.Interface())
	if hm["state"] != "RUNNING" {
		t.Errorf("handle.state = %v, want RUNNING", hm["state"])
	}
	if s, _ := hm["driver_state"].(string); s == "" {
		t.Errorf("handle.driver_state is empty: nothing for the agent to recover from")
	}
	if cfg, _ := hm["config"].(map[string]any); cfg["id"] != id {
		t.Errorf("handle.config.id = %v, want %s", cfg["id"], id)
	}
	// The agent persists the handle; a wire round trip stands for that.
	raw, err := proto.Marshal(h.Interface())
	if err != nil {
		t.Fatal(err)
	}
	stored, err := NewMessage(DriverPkg+"TaskHandle", "")
	if err != nil {
		t.Fatal(err)
	}
	if err := proto.Unmarshal(raw, stored); err != nil {
		t.Fatal(err)
	}
	return id, stored
}

// recoverTask sends RecoverTask as the agent does after a restart: the stored
// handle, task_id left empty.
func (p *realPlugin) recoverTask(t *testing.T, handle *dynamicpb.Message) error {
	t.Helper()
	req, err := NewMessage(DriverPkg+"RecoverTaskRequest", "")
	if err != nil {
		t.Fatal(err)
	}
	req.Set(req.Descriptor().Fields().ByName("handle"), protoreflect.ValueOfMessage(handle))
	_, err = callFor(t, p.Instance, 30*time.Second, "/"+DriverPkg+"Driver/RecoverTask", req)
	return err
}

// waitOutcome is one WaitTask answer.
type waitOutcome struct {
	resp *dynamicpb.Message
	err  error
	at   time.Time
}

// waitTask opens WaitTask in the background, as the task runner does right
// after StartTask or RecoverTask.
func (p *realPlugin) waitTask(id string, d time.Duration) <-chan waitOutcome {
	ch := make(chan waitOutcome, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		resp, err := Invoke(ctx, p.Conn, mWaitTask, fmt.Sprintf(`{"task_id": %q}`, id))
		ch <- waitOutcome{resp, err, time.Now()}
	}()
	return ch
}

// exitResult is a WaitTask result as the agent reads it.
type exitResult struct {
	code, signal int64
	oom          bool
	err          string
}

// result checks a WaitTask answer: OK, with result set (the agent
// dereferences it), and returns the exit.
func (w waitOutcome) result(t *testing.T, what string) exitResult {
	t.Helper()
	if w.err != nil {
		t.Fatalf("WaitTask %s: %v", what, w.err)
	}
	r := Field(w.resp, "result")
	if r == nil {
		t.Fatalf("WaitTask %s returned OK with result unset: the agent would dereference nil", what)
	}
	fs := r.Descriptor().Fields()
	errText := w.resp.Get(w.resp.Descriptor().Fields().ByName("err")).String()
	return exitResult{
		code:   r.Get(fs.ByName("exit_code")).Int(),
		signal: r.Get(fs.ByName("signal")).Int(),
		oom:    r.Get(fs.ByName("oom_killed")).Bool(),
		err:    errText,
	}
}

// recvWait takes the WaitTask answer within d.
func recvWait(t *testing.T, ch <-chan waitOutcome, what string, d time.Duration) exitResult {
	t.Helper()
	select {
	case w := <-ch:
		return w.result(t, what)
	case <-time.After(d):
		t.Fatalf("WaitTask %s: no answer within %v", what, d)
	}
	return exitResult{}
}

func (p *realPlugin) stopTask(t *testing.T, id, signal, timeout string) time.Duration {
	t.Helper()
	began := time.Now()
	_, err := callFor(t, p.Instance, 60*time.Second, mStopTask,
		fmt.Sprintf(`{"task_id": %q, "signal": %q, "timeout": %q}`, id, signal, timeout))
	if err != nil {
		t.Fatalf("StopTask %s: %v", id, err)
	}
	return time.Since(began)
}

func (p *realPlugin) destroyTask(t *testing.T, id string, force bool) {
	t.Helper()
	if _, err := callFor(t, p.Instance, 60*time.Second, mDestroyTask,
		fmt.Sprintf(`{"task_id": %q, "force": %v}`, id, force)); err != nil {
		t.Errorf("DestroyTask %s (force=%v): %v", id, force, err)
	}
}

func (p *realPlugin) inspect(t *testing.T, id string) map[string]any {
	t.Helper()
	resp, err := callFor(t, p.Instance, 10*time.Second, mInspectTask, fmt.Sprintf(`{"task_id": %q}`, id))
	if err != nil {
		t.Fatalf("InspectTask %s: %v", id, err)
	}
	task, _ := AsMap(resp)["task"].(map[string]any)
	if task == nil {
		t.Fatalf("InspectTask %s: task unset", id)
	}
	return task
}

// statsSample is one TaskStats message as the agent reads it.
type statsSample struct {
	at  time.Time
	agg map[string]any // agg_resource_usage, nil when unset
}

// collectStats reads n samples from TaskStats at the given interval.
func (p *realPlugin) collectStats(t *testing.T, id, interval string, n int) []statsSample {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := OpenStream(ctx, p.Conn, mTaskStats, fmt.Sprintf(`{"task_id": %q, "collection_interval": %q}`, id, interval))
	if err != nil {
		t.Fatalf("TaskStats %s: %v", id, err)
	}
	var out []statsSample
	for len(out) < n {
		m, err := s.Recv()
		if err != nil {
			t.Fatalf("TaskStats %s: stream ended after %d samples: %v", id, len(out), err)
		}
		stats, _ := AsMap(m)["stats"].(map[string]any)
		if stats == nil {
			t.Fatalf("TaskStatsResponse.stats unset")
		}
		ts, _ := stats["timestamp"].(string)
		at, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil {
			t.Errorf("sample %d: timestamp %q: %v", len(out), ts, err)
		}
		agg, _ := stats["agg_resource_usage"].(map[string]any)
		out = append(out, statsSample{at, agg})
	}
	return out
}

// pipeInode names the pipe behind one of a process's fds ("pipe:[123]").
func pipeInode(pid, fd int) string {
	link, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", pid, fd))
	return link
}

// holders lists processes with an fd open on the named pipe.
func holders(link string) []string {
	var out []string
	procs, _ := filepath.Glob("/proc/[0-9]*/fd/*")
	for _, fd := range procs {
		if l, err := os.Readlink(fd); err == nil && l == link {
			pid := strings.Split(fd, "/")[2]
			cmdline, _ := os.ReadFile("/proc/" + pid + "/cmdline")
			out = append(out, fmt.Sprintf("pid %s (%s)", pid, strings.TrimSpace(string(bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '})))))
		}
	}
	return out
}

// leftovers is what a finished test must not leave under its data_dir:
// mounts, runc containers, conmon monitors, pod state directories.
func leftovers(dataDir string) []string {
	var found []string
	for _, m := range mountsUnder(dataDir) {
		found = append(found, "mount "+m)
	}
	for _, id := range runcContainers(dataDir) {
		found = append(found, "runc container "+id)
	}
	for _, pid := range conmonPids(dataDir) {
		found = append(found, fmt.Sprintf("conmon pid %d", pid))
	}
	if entries, err := os.ReadDir(filepath.Join(dataDir, "pods", "pods")); err == nil {
		for _, e := range entries {
			found = append(found, "pod dir "+e.Name())
		}
	}
	return found
}

func mountsUnder(dir string) []string {
	raw, _ := os.ReadFile("/proc/mounts")
	var out []string
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Fields(line)
		if len(f) > 1 && (f[1] == dir || strings.HasPrefix(f[1], dir+"/")) {
			out = append(out, f[1])
		}
	}
	return out
}

func runcContainers(dataDir string) []string {
	root := filepath.Join(dataDir, "pods", "runc")
	if _, err := os.Stat(root); err != nil {
		return nil
	}
	out, _ := exec.Command("runc", "--root", root, "list", "-q").Output()
	return strings.Fields(string(out))
}

func conmonPids(dataDir string) []int {
	var out []int
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range cmdlines {
		raw, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(string(raw), "\x00")
		if filepath.Base(args[0]) == "conmon" && strings.Contains(string(raw), dataDir) {
			var pid int
			fmt.Sscanf(strings.Split(p, "/")[2], "%d", &pid)
			out = append(out, pid)
		}
	}
	return out
}

// cleanUp is the safety net after a failed test, so the host stays clean:
// force-delete containers, kill monitors, detach mounts (deepest first).
func cleanUp(dataDir string) {
	root := filepath.Join(dataDir, "pods", "runc")
	for _, id := range runcContainers(dataDir) {
		_ = exec.Command("runc", "--root", root, "delete", "--force", id).Run()
	}
	for _, pid := range conmonPids(dataDir) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	mounts := mountsUnder(dataDir)
	sort.Slice(mounts, func(i, j int) bool { return len(mounts[i]) > len(mounts[j]) })
	for _, m := range mounts {
		_ = syscall.Unmount(m, syscall.MNT_DETACH)
	}
}
