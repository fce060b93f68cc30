package conformance

import (
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
)

// TestIgnoresSIGINTAndSIGHUP: Ctrl-C in the agent's terminal reaches the whole
// process group, and a plugin whose agent died gets SIGHUP; neither may stop
// the plugin (Go plugin servers ignore them).
func TestIgnoresSIGINTAndSIGHUP(t *testing.T) {
	t.Parallel()
	in := Launch(t)
	pid := in.Client.ReattachConfig().Pid
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGHUP} {
		if err := syscall.Kill(pid, sig); err != nil {
			t.Fatalf("kill -%v %d: %v", sig, pid, err)
		}
	}
	time.Sleep(500 * time.Millisecond)
	if in.Client.Exited() {
		t.Fatalf("plugin exited on SIGINT/SIGHUP")
	}
	checkPluginInfo(t, in)
	in.MustKillGracefully(t)
}

// TestReattach: the agent reconnects to a running plugin from its stored
// ReattachConfig (no SetConfig on that path), then shuts it down.
func TestReattach(t *testing.T) {
	t.Parallel()
	in := Launch(t)
	mustSetConfig(t, in, encodePlugin(t, in, undetectedPlugin), true)

	c2 := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  Handshake,
		Plugins:          plugin.PluginSet{"driver": connPlugin{}},
		Reattach:         in.Client.ReattachConfig(),
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		Logger:           hclog.New(&hclog.LoggerOptions{Name: "agent2", Output: in.Logs, JSONFormat: true}),
	})
	rpc, err := c2.Client()
	if err != nil {
		t.Fatalf("reattach: %v", err)
	}
	raw, err := rpc.Dispense("driver")
	if err != nil {
		t.Fatalf("dispense after reattach: %v", err)
	}
	second := &Instance{Client: c2, Conn: raw.(*grpc.ClientConn), Stderr: in.Stderr, Logs: in.Logs}
	checkPluginInfo(t, second)
	if fp := fingerprintOnce(t, second); fp["health"] != "UNDETECTED" {
		t.Errorf("reattached plugin lost its config: health = %v", fp["health"])
	}

	took, _ := second.Kill()
	deadline := time.Now().Add(killBudget)
	for !in.Client.Exited() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if !in.Client.Exited() {
		t.Errorf("plugin still running %v after Shutdown from the reattached client (Kill took %v)", killBudget, took)
	}
}
