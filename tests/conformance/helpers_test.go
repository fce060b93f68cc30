package conformance

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2/hcldec"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/dynamicpb"
)

// Method paths.
const (
	mPluginInfo       = "/" + BasePkg + "BasePlugin/PluginInfo"
	mConfigSchema     = "/" + BasePkg + "BasePlugin/ConfigSchema"
	mSetConfig        = "/" + BasePkg + "BasePlugin/SetConfig"
	mTaskConfigSchema = "/" + DriverPkg + "Driver/TaskConfigSchema"
	mCapabilities     = "/" + DriverPkg + "Driver/Capabilities"
	mFingerprint      = "/" + DriverPkg + "Driver/Fingerprint"
	mTaskEvents       = "/" + DriverPkg + "Driver/TaskEvents"
	mStartTask        = "/" + DriverPkg + "Driver/StartTask"
	mWaitTask         = "/" + DriverPkg + "Driver/WaitTask"
	mInspectTask      = "/" + DriverPkg + "Driver/InspectTask"
	mStopTask         = "/" + DriverPkg + "Driver/StopTask"
	mDestroyTask      = "/" + DriverPkg + "Driver/DestroyTask"
	mSignalTask       = "/" + DriverPkg + "Driver/SignalTask"
	mTaskStats        = "/" + DriverPkg + "Driver/TaskStats"
	mStreamStdio      = "/plugin.GRPCStdio/StreamStdio"
)

const apiVersion = "v0.1.0"

// undetectedPlugin is an agent plugin block that makes the driver UNDETECTED.
const undetectedPlugin = `plugin "rkt" {
  config {
    runtime = "/nonexistent/runc"
  }
}
`

// taskBlock is a job task using every attribute named in the contract, with
// the given insecure_options list. port_map is written as an attribute or as
// a block, whichever the plugin's TaskConfigSchema declares.
func taskBlock(t *testing.T, in *Instance, insecure string) string {
	t.Helper()
	portMap := `port_map = { http = "8080" }`
	if isBlockAttrs(objectKeys(t, schemaSpec(t, in, mTaskConfigSchema))["port_map"]) {
		portMap = "port_map {\n      http = \"8080\"\n    }"
	}
	return fmt.Sprintf(`task "web" {
  driver = "rkt"
  config {
    image            = "docker://docker.io/library/busybox:1.36"
    command          = "/bin/sh"
    args             = ["-c", "sleep 600"]
    ports            = ["http"]
    net              = ["default"]
    insecure_options = %s
    trust_prefix     = "docker.io/library"
    %s
  }
}
`, insecure, portMap)
}

// isBlockAttrs reports whether a spec (possibly under Default) is BlockAttrs.
func isBlockAttrs(s hcldec.Spec) bool {
	for {
		switch v := s.(type) {
		case *hcldec.DefaultSpec:
			s = v.Primary
		case *hcldec.BlockAttrsSpec:
			return true
		default:
			return false
		}
	}
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func call(t *testing.T, in *Instance, path string, req any) (*dynamicpb.Message, error) {
	t.Helper()
	return Invoke(ctxT(t, 10*time.Second), in.Conn, path, req)
}

func mustCall(t *testing.T, in *Instance, path string, req any) *dynamicpb.Message {
	t.Helper()
	resp, err := call(t, in, path, req)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return resp
}

// schemaSpec fetches ConfigSchema or TaskConfigSchema and converts it.
func schemaSpec(t *testing.T, in *Instance, path string) hcldec.Spec {
	t.Helper()
	resp := mustCall(t, in, path, nil)
	sm := Field(resp, "spec")
	if sm == nil {
		t.Fatalf("%s returned no spec", path)
	}
	spec, diags := ConvertSpec(sm)
	if diags.HasErrors() {
		t.Fatalf("%s: schema does not convert like the agent would: %v", path, diags)
	}
	return spec
}

// encodePlugin encodes an agent plugin block with the plugin's ConfigSchema.
func encodePlugin(t *testing.T, in *Instance, src string) []byte {
	t.Helper()
	b, _, diags := EncodeHCL(src, schemaSpec(t, in, mConfigSchema), "plugin", "config")
	if diags.HasErrors() {
		t.Fatalf("decoding plugin block: %v\n%s", diags, src)
	}
	return b
}

// encodeTask encodes a job task's config {} with TaskConfigSchema.
func encodeTask(t *testing.T, in *Instance, src string) []byte {
	t.Helper()
	b, _, diags := EncodeHCL(src, schemaSpec(t, in, mTaskConfigSchema), "task", "config")
	if diags.HasErrors() {
		t.Fatalf("decoding task block: %v\n%s", diags, src)
	}
	return b
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// nomadConfig is the NomadConfig the agent's driver manager sends.
const nomadConfig = `{"driver": {"ClientMinPort": 14000, "ClientMaxPort": 14512, "Topology": {
  "node_ids": [0],
  "distances": {"dimension": 1, "values": [10]},
  "cores": [
    {"socket_id": 0, "node_id": 0, "core_id": 0, "base_speed": 2400, "max_speed": 3000},
    {"socket_id": 0, "node_id": 0, "core_id": 1, "base_speed": 2400, "max_speed": 3000}
  ]}}}`

func setConfig(t *testing.T, in *Instance, msgpack []byte, withNomad bool) error {
	t.Helper()
	req := fmt.Sprintf(`{"msgpack_config": %q, "plugin_api_version": %q`, b64(msgpack), apiVersion)
	if withNomad {
		req += `, "nomad_config": ` + nomadConfig
	}
	_, err := call(t, in, mSetConfig, req+"}")
	return err
}

func mustSetConfig(t *testing.T, in *Instance, msgpack []byte, withNomad bool) {
	t.Helper()
	if err := setConfig(t, in, msgpack, withNomad); err != nil {
		t.Fatalf("SetConfig: %v", err)
	}
}

// startTaskReq is a TaskConfig as the client's task runner builds it.
func startTaskReq(t *testing.T, msgpack []byte) string {
	allocDir := t.TempDir()
	task := map[string]any{
		"id": "allocid/web/abcd1234", "name": "web", "msgpack_driver_config": b64(msgpack),
		"env": map[string]string{"NOMAD_TASK_NAME": "web"}, "alloc_id": "allocid",
		"task_group_name": "web", "job_name": "example", "job_id": "example", "namespace": "default",
		"alloc_dir": allocDir, "stdout_path": "/dev/null", "stderr_path": "/dev/null",
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
	return string(b)
}

// recvResult is one Stream.Recv outcome.
type recvResult struct {
	msg *dynamicpb.Message
	err error
}

// recvAsync pumps a stream into a channel until it errors.
func recvAsync(s *Stream) <-chan recvResult {
	ch := make(chan recvResult, 16)
	go func() {
		defer close(ch)
		for {
			m, err := s.Recv()
			ch <- recvResult{m, err}
			if err != nil {
				return
			}
		}
	}()
	return ch
}

// first waits up to d for the first message of a stream.
func first(t *testing.T, ch <-chan recvResult, what string, d time.Duration) *dynamicpb.Message {
	t.Helper()
	select {
	case r, ok := <-ch:
		if !ok || r.err != nil {
			t.Fatalf("%s: stream ended before its first message: %v", what, r.err)
		}
		return r.msg
	case <-time.After(d):
		t.Fatalf("%s: no first message within %v", what, d)
	}
	return nil
}

// staysOpen fails if the stream ends within d; allowMsgs permits messages.
func staysOpen(t *testing.T, ch <-chan recvResult, what string, d time.Duration, allowMsgs bool) {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case r, ok := <-ch:
			switch {
			case !ok || r.err != nil:
				t.Errorf("%s: stream ended within %v: %v", what, d, r.err)
				return
			case !allowMsgs:
				t.Errorf("%s: unexpected message within %v: %v", what, d, AsMap(r.msg))
			}
		case <-deadline:
			return
		}
	}
}

// wantCode asserts a gRPC error with the code whose message names a word.
func wantCode(t *testing.T, err error, code codes.Code, mention string) {
	t.Helper()
	if err == nil {
		t.Errorf("want gRPC %v naming %q, got success", code, mention)
		return
	}
	st, _ := status.FromError(err)
	if st.Code() != code {
		t.Errorf("want gRPC code %v, got %v: %s", code, st.Code(), st.Message())
	}
	if mention != "" && !strings.Contains(st.Message(), mention) {
		t.Errorf("error message %q does not name %q", st.Message(), mention)
	}
}

// wantErrNaming asserts any gRPC error whose message names a word.
func wantErrNaming(t *testing.T, err error, mention string) {
	t.Helper()
	if err == nil {
		t.Errorf("want an error naming %q, got success", mention)
		return
	}
	if st, _ := status.FromError(err); !strings.Contains(st.Message(), mention) {
		t.Errorf("error (%v) %q does not name %q", st.Code(), st.Message(), mention)
	}
}
