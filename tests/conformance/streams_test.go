package conformance

import (
	"context"
	"strings"
	"testing"
	"time"
)

// fingerprintOnce opens Fingerprint, takes the first answer and closes it.
func fingerprintOnce(t *testing.T, in *Instance) map[string]any {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := OpenStream(ctx, in.Conn, mFingerprint, nil)
	if err != nil {
		t.Fatalf("Fingerprint: %v", err)
	}
	return AsMap(first(t, recvAsync(s), "Fingerprint", 5*time.Second))
}

var healthStates = map[any]bool{"UNDETECTED": true, "UNHEALTHY": true, "HEALTHY": true}

// TestFingerprintAndTaskEvents: with the default config the first fingerprint
// comes at once, carries driver.rkt.version, and the stream stays open;
// TaskEvents stays open and silent.
func TestFingerprintAndTaskEvents(t *testing.T) {
	t.Parallel()
	in := Launch(t)
	mustSetConfig(t, in, encodePlugin(t, in, `plugin "rkt" {}`), true)

	caps := AsMap(mustCall(t, in, mCapabilities, nil))["capabilities"].(map[string]any)
	if caps["fs_isolation"] != "IMAGE" {
		t.Errorf("Capabilities.fs_isolation = %v, want IMAGE (%v)", caps["fs_isolation"], caps)
	}

	fp, err := OpenStream(ctxT(t, time.Minute), in.Conn, mFingerprint, nil)
	if err != nil {
		t.Fatalf("Fingerprint: %v", err)
	}
	ev, err := OpenStream(ctxT(t, time.Minute), in.Conn, mTaskEvents, nil)
	if err != nil {
		t.Fatalf("TaskEvents: %v", err)
	}
	fpCh, evCh := recvAsync(fp), recvAsync(ev)
	resp := AsMap(first(t, fpCh, "Fingerprint", 5*time.Second))
	if !healthStates[resp["health"]] {
		t.Errorf("Fingerprint.health = %v", resp["health"])
	}
	attrs, _ := resp["attributes"].(map[string]any)
	if _, ok := attrs["driver.rkt.version"]; !ok {
		t.Errorf("Fingerprint lacks attribute driver.rkt.version: %v", attrs)
	}
	t.Logf("host fingerprint: health=%v description=%q", resp["health"], resp["health_description"])

	done := make(chan struct{})
	go func() { defer close(done); staysOpen(t, evCh, "TaskEvents", 3*time.Second, false) }()
	staysOpen(t, fpCh, "Fingerprint", 3*time.Second, true)
	<-done
}

// TestFingerprintUndetected: a runtime that does not exist is UNDETECTED and
// the description says why.
func TestFingerprintUndetected(t *testing.T) {
	t.Parallel()
	in := Launch(t)
	mustSetConfig(t, in, encodePlugin(t, in, undetectedPlugin), true)
	fp := fingerprintOnce(t, in)
	if fp["health"] != "UNDETECTED" {
		t.Errorf("health = %v, want UNDETECTED", fp["health"])
	}
	if d, _ := fp["health_description"].(string); !strings.Contains(d, "runc") {
		t.Errorf("health_description %q does not mention runc", d)
	}
}

// TestFingerprintCancel: clients that hang up on Fingerprint mid-stream must
// not wedge the plugin (each abandoned handler could pin a worker).
func TestFingerprintCancel(t *testing.T) {
	t.Parallel()
	in := Launch(t)
	mustSetConfig(t, in, encodePlugin(t, in, `plugin "rkt" {}`), true)
	for i := 0; i < 6; i++ {
		fingerprintOnce(t, in) // cancels its context on return
	}
	start := time.Now()
	checkPluginInfo(t, in)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("PluginInfo after cancelled Fingerprint streams took %v", d)
	}
	fingerprintOnce(t, in)
}
