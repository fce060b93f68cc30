package conformance

import (
	"regexp"
	"slices"
	"testing"
	"time"
)

var semver = regexp.MustCompile(`^v?\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$`)

// checkPluginInfo asserts what the agent's loader requires of PluginInfo.
func checkPluginInfo(t *testing.T, in *Instance) {
	t.Helper()
	info := AsMap(mustCall(t, in, mPluginInfo, nil))
	if info["type"] != "DRIVER" {
		t.Errorf("PluginInfo.type = %v, want DRIVER", info["type"])
	}
	if info["name"] != "rkt" {
		t.Errorf("PluginInfo.name = %v, want rkt", info["name"])
	}
	var versions []string
	for _, v := range info["plugin_api_versions"].([]any) {
		versions = append(versions, v.(string))
	}
	if !slices.Contains(versions, apiVersion) {
		t.Errorf("plugin_api_versions = %v, want it to contain %s", versions, apiVersion)
	}
	if v, _ := info["plugin_version"].(string); !semver.MatchString(v) {
		t.Errorf("plugin_version %q is not a version go-version would parse", v)
	}
}

// TestBootSequence launches the plugin three times, as a Nomad agent does at
// start, and checks each launch leaves within 2 s of Kill().
func TestBootSequence(t *testing.T) {
	t.Parallel()

	// Launch 1: the loader's fingerprint of the binary.
	in := Launch(t)
	checkPluginInfo(t, in)
	spec := schemaSpec(t, in, mConfigSchema)
	in.MustKillGracefully(t)

	// The agent config has a plugin "rkt" {} block without config {}.
	cfg, _, diags := EncodeHCL(`plugin "rkt" {}`, spec, "plugin", "config")
	if diags.HasErrors() {
		t.Fatalf("empty plugin block does not decode: %v", diags)
	}

	// Launch 2: config validation, SetConfig twice without nomad_config.
	in = Launch(t)
	mustSetConfig(t, in, cfg, false)
	mustSetConfig(t, in, cfg, false)
	in.MustKillGracefully(t)

	// Launch 3: the driver manager's long-lived instance.
	in = Launch(t)
	mustSetConfig(t, in, cfg, true)
	fp, err := OpenStream(ctxT(t, time.Minute), in.Conn, mFingerprint, nil)
	if err != nil {
		t.Fatalf("Fingerprint: %v", err)
	}
	ev, err := OpenStream(ctxT(t, time.Minute), in.Conn, mTaskEvents, nil)
	if err != nil {
		t.Fatalf("TaskEvents: %v", err)
	}
	fpCh, evCh := recvAsync(fp), recvAsync(ev)
	first(t, fpCh, "Fingerprint", 5*time.Second)
	staysOpen(t, evCh, "TaskEvents", time.Second, false)
	// Kill with both streams still open, as at agent shutdown.
	in.MustKillGracefully(t)
}
