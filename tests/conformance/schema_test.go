package conformance

import (
	"fmt"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/zclconf/go-cty/cty"
	"google.golang.org/grpc/codes"
)

func objectKeys(t *testing.T, spec hcldec.Spec) map[string]hcldec.Spec {
	t.Helper()
	obj, ok := spec.(hcldec.ObjectSpec)
	if !ok {
		t.Fatalf("schema root is %T, want an Object", spec)
	}
	return obj
}

// TestSchemasConvert checks both schemas are Object roots that convert as in
// the agent and declare the contract's attributes, with the plugin defaults.
func TestSchemasConvert(t *testing.T) {
	t.Parallel()
	in := Launch(t)

	plugin := objectKeys(t, schemaSpec(t, in, mConfigSchema))
	for _, k := range []string{"runtime", "conmon", "cni_path", "data_dir", "fingerprint_period"} {
		if plugin[k] == nil {
			t.Errorf("ConfigSchema lacks attribute %q", k)
		}
	}
	task := objectKeys(t, schemaSpec(t, in, mTaskConfigSchema))
	for _, k := range []string{"image", "command", "args", "port_map", "ports", "net", "insecure_options", "trust_prefix"} {
		if task[k] == nil {
			t.Errorf("TaskConfigSchema lacks attribute %q", k)
		}
	}

	// Absent plugin config decodes to the documented defaults.
	_, v, diags := EncodeHCL(`plugin "rkt" {}`, hcldec.ObjectSpec(plugin), "plugin", "config")
	if diags.HasErrors() {
		t.Fatalf("empty plugin block: %v", diags)
	}
	for k, want := range map[string]string{"runtime": "runc", "conmon": "conmon"} {
		if got := v.GetAttr(k); !got.RawEquals(cty.StringVal(want)) {
			t.Errorf("default of %s = %#v, want %q", k, got, want)
		}
	}

	// image is required by the task schema.
	_, _, diags = EncodeHCL("task \"web\" {\n  config {\n    command = \"/bin/sh\"\n  }\n}\n",
		hcldec.ObjectSpec(task), "task", "config")
	if !diags.HasErrors() || !strings.Contains(diags.Error(), "image") {
		t.Errorf("task block without image: want a diagnostic naming image, got %v", diags)
	}
}

func fullPlugin(dataDir, period string) string {
	return fmt.Sprintf(`plugin "rkt" {
  config {
    runtime            = "runc"
    conmon             = "conmon"
    cni_path           = ["/usr/lib/cni", "/opt/cni/bin"]
    data_dir           = %q
    fingerprint_period = %q
  }
}
`, dataDir, period)
}

// TestPluginConfigRoundTrip sends a full plugin block through the agent's
// pipeline and checks the plugin validates it like the agent would expect.
func TestPluginConfigRoundTrip(t *testing.T) {
	t.Parallel()
	in := Launch(t)
	spec := schemaSpec(t, in, mConfigSchema)

	mustSetConfig(t, in, encodePlugin(t, in, fullPlugin(t.TempDir(), "30s")), true)

	t.Run("wrong type is rejected by hcldec", func(t *testing.T) {
		_, _, diags := EncodeHCL("plugin \"rkt\" {\n  config {\n    runtime = [\"x\"]\n  }\n}\n", spec, "plugin", "config")
		if !diags.HasErrors() || !strings.Contains(diags.Error(), "runtime") {
			t.Errorf("runtime = [\"x\"]: want a diagnostic naming runtime, got %v", diags)
		}
	})
	t.Run("unknown key is rejected by hcldec", func(t *testing.T) {
		_, _, diags := EncodeHCL("plugin \"rkt\" {\n  config {\n    bogus = 1\n  }\n}\n", spec, "plugin", "config")
		if !diags.HasErrors() || !strings.Contains(diags.Error(), "Unsupported argument") {
			t.Errorf("bogus = 1: want Unsupported argument, got %v", diags)
		}
	})
	t.Run("negative duration is rejected by SetConfig", func(t *testing.T) {
		b, _, diags := EncodeHCL(fullPlugin(t.TempDir(), "-5s"), spec, "plugin", "config")
		if diags.HasErrors() {
			t.Fatalf("hcldec should accept any string duration: %v", diags)
		}
		wantErrNaming(t, setConfig(t, in, b, true), "fingerprint_period")
	})
	t.Run("corrupt msgpack is an error and the plugin keeps serving", func(t *testing.T) {
		for _, bad := range [][]byte{{0xc1}, {0x85, 0xa7}, []byte("not msgpack at all")} {
			if err := setConfig(t, in, bad, true); err == nil {
				t.Errorf("SetConfig accepted corrupt msgpack %x", bad)
			}
		}
		checkPluginInfo(t, in)
	})
}

// TestSetConfigSecondWins sends a healthy-looking config, then one whose
// runtime does not exist: the next fingerprint must reflect the second.
func TestSetConfigSecondWins(t *testing.T) {
	t.Parallel()
	in := Launch(t)
	mustSetConfig(t, in, encodePlugin(t, in, `plugin "rkt" {}`), true)
	mustSetConfig(t, in, encodePlugin(t, in, undetectedPlugin), true)
	fp := fingerprintOnce(t, in)
	if fp["health"] != "UNDETECTED" {
		t.Errorf("after SetConfig with runtime=/nonexistent/runc, health = %v (%v), want UNDETECTED",
			fp["health"], fp["health_description"])
	}
}

// TestTaskConfigReachesPlugin encodes real task blocks and shows the plugin
// decoded them: a valid one reaches the health precondition, a bad
// insecure_options value is named in a non-recoverable error.
func TestTaskConfigReachesPlugin(t *testing.T) {
	t.Parallel()
	in := Launch(t)
	mustSetConfig(t, in, encodePlugin(t, in, undetectedPlugin), true)

	_, err := call(t, in, mStartTask, startTaskReq(t, encodeTask(t, in, taskBlock(t, in, `["image", "tls"]`))))
	checkRecoverable(t, err)

	_, err = call(t, in, mStartTask, startTaskReq(t, encodeTask(t, in, taskBlock(t, in, `["bogus"]`))))
	// Checked while the driver is UNDETECTED on purpose: a config that can
	// never work must not be reported as retryable.
	wantCode(t, err, codes.InvalidArgument, "insecure_options")
	if rec, derr := StatusDetail0(err, StructsPkg+"RecoverableError"); derr == nil && AsMap(rec)["recoverable"] == true {
		t.Errorf("invalid insecure_options was marked recoverable")
	}
}
