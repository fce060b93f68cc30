// Package conformance launches the nomad-rkt-driver plugin the way a Nomad
// agent does (hashicorp/go-plugin, gRPC, no mTLS) and drives its RPCs through
// dynamic protobuf messages compiled from the project's own .proto files.
package conformance

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
)

// PluginEnvVar names the environment variable holding the plugin executable.
const PluginEnvVar = "NOMAD_RKT_DRIVER_PLUGIN"

// Handshake is what Nomad 1.10 uses for every plugin it launches.
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  2,
	MagicCookieKey:   "NOMAD_PLUGIN_MAGIC_COOKIE",
	MagicCookieValue: "e4327c2e01eabfd75a8a67adb114fb34a757d57eee7728d857a8cec6e91a7255",
}

// killBudget is how long the agent waits for a plugin to leave after Shutdown.
const killBudget = 2 * time.Second

// connPlugin is a client-only GRPCPlugin that hands back the raw connection.
type connPlugin struct {
	plugin.NetRPCUnsupportedPlugin
}

func (connPlugin) GRPCServer(*plugin.GRPCBroker, *grpc.Server) error {
	return errors.New("the conformance harness only implements the client side")
}

func (connPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (interface{}, error) {
	return c, nil
}

// RepoRoot is the repository root, two levels above this package.
func RepoRoot() string {
	wd, err := os.Getwd()
	if err != nil {
		return "../.."
	}
	return filepath.Clean(filepath.Join(wd, "..", ".."))
}

// PluginPath returns the plugin executable, failing the test if it is absent.
func PluginPath(t testing.TB) string {
	t.Helper()
	p := os.Getenv(PluginEnvVar)
	if p == "" {
		p = filepath.Join(RepoRoot(), ".venv", "bin", "nomad-rkt-driver")
	}
	st, err := os.Stat(p)
	if err != nil {
		t.Fatalf("plugin executable not found at %s (set %s to its absolute path, "+
			"or run scripts/setup.sh to create .venv): %v", p, PluginEnvVar, err)
	}
	if st.IsDir() || st.Mode()&0o111 == 0 {
		t.Fatalf("plugin %s is not an executable file (mode %v)", p, st.Mode())
	}
	return p
}

// SyncBuffer is a bytes.Buffer safe for concurrent writers and readers.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Instance is one launched plugin process.
type Instance struct {
	Client *plugin.Client
	Conn   *grpc.ClientConn
	Stderr *SyncBuffer // raw stderr lines as the plugin wrote them
	Logs   *SyncBuffer // go-plugin's own logger output (hclog JSON)
	killed bool
}

// Launch starts the plugin and dispenses the gRPC connection. The process is
// killed at test cleanup unless the test already did so.
func Launch(t testing.TB) *Instance {
	t.Helper()
	return LaunchPath(t, PluginPath(t))
}

// LaunchPath is Launch for an explicit executable.
func LaunchPath(t testing.TB, path string) *Instance {
	t.Helper()
	cmd := exec.Command(path)
	// A plugin that a test SIGKILLs cannot remove its socket: keep sockets in the test's own dir.
	cmd.Env = []string{"PLUGIN_UNIX_SOCKET_DIR=" + t.TempDir()}
	return LaunchCmd(t, cmd)
}

// LaunchCmd is Launch for a prepared command (go-plugin appends the agent's
// environment and the handshake variables to cmd.Env).
func LaunchCmd(t testing.TB, cmd *exec.Cmd) *Instance {
	t.Helper()
	inst := &Instance{Stderr: &SyncBuffer{}, Logs: &SyncBuffer{}}
	logger := hclog.New(&hclog.LoggerOptions{
		Name:       "agent",
		Level:      hclog.Trace,
		Output:     inst.Logs,
		JSONFormat: true,
	})
	inst.Client = plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  Handshake,
		Plugins:          plugin.PluginSet{"driver": connPlugin{}},
		Cmd:              cmd,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		Logger:           logger,
		Stderr:           inst.Stderr,
		StartTimeout:     30 * time.Second,
	})
	t.Cleanup(func() {
		if !inst.killed {
			inst.Client.Kill()
		}
		if t.Failed() {
			t.Logf("plugin stderr:\n%s", inst.Stderr.String())
		}
	})
	rpc, err := inst.Client.Client()
	if err != nil {
		t.Fatalf("go-plugin could not start the plugin: %v\nstderr:\n%s", err, inst.Stderr.String())
	}
	raw, err := rpc.Dispense("driver")
	if err != nil {
		t.Fatalf("dispense: %v", err)
	}
	conn, ok := raw.(*grpc.ClientConn)
	if !ok {
		t.Fatalf("dispense returned %T, want *grpc.ClientConn", raw)
	}
	inst.Conn = conn
	return inst
}

// Kill calls go-plugin's Kill (GRPCController.Shutdown, then wait) and reports
// how long it took and whether the process was seen to exit.
func (in *Instance) Kill() (time.Duration, bool) {
	start := time.Now()
	in.Client.Kill()
	in.killed = true
	return time.Since(start), in.Client.Exited()
}

// MustKillGracefully fails the test unless the plugin left within killBudget
// on its own (go-plugin would otherwise SIGKILL it after 2 s).
func (in *Instance) MustKillGracefully(t testing.TB) {
	t.Helper()
	took, exited := in.Kill()
	if !exited {
		t.Errorf("plugin process has not exited after Kill() (took %v)", took)
	}
	if took >= killBudget {
		t.Errorf("Kill() took %v: plugin did not exit within %v of Shutdown", took, killBudget)
	}
	if strings.Contains(in.Logs.String(), "plugin failed to exit gracefully") {
		t.Errorf("go-plugin had to force-kill the plugin after Shutdown (took %v)", took)
	}
}
