package conformance

import (
	"bufio"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const hclogTimeLayout = "2006-01-02T15:04:05.000000Z07:00"

var hclogLevels = map[string]bool{"trace": true, "debug": true, "info": true, "warn": true, "error": true}

type entry struct{ level, message string }

// checkStderrLines checks raw stderr is hclog JSON the agent can parse and
// returns its entries.
func checkStderrLines(t testing.TB, stderr string) []entry {
	t.Helper()
	var raw []entry
	lines := jsonLines(stderr)
	if len(lines) == 0 {
		t.Errorf("the plugin wrote nothing on stderr")
		return nil
	}
	for _, line := range lines {
		var obj map[string]any
		if err := json.Unmarshal([]byte(line), &obj); err != nil {
			t.Errorf("stderr line is not a JSON object: %q", line)
			continue
		}
		lvl, ok1 := obj["@level"].(string)
		msg, ok2 := obj["@message"].(string)
		ts, ok3 := obj["@timestamp"].(string)
		if !ok1 || !ok2 || !ok3 {
			t.Errorf("@level/@message/@timestamp must all be JSON strings (a non-string panics the agent): %q", line)
			continue
		}
		if !hclogLevels[lvl] {
			t.Errorf("@level %q is not one of trace/debug/info/warn/error: %q", lvl, line)
		}
		if _, err := time.Parse(hclogTimeLayout, ts); err != nil {
			t.Errorf("@timestamp %q does not match %s: %v", ts, hclogTimeLayout, err)
		}
		raw = append(raw, entry{lvl, msg})
	}

	return raw
}

func jsonLines(s string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); line != "" {
			out = append(out, line)
		}
	}
	return out
}

// TestStderrIsHclogJSON checks every stderr line is an hclog JSON object the
// agent can re-log (string @level/@message/@timestamp, exact time layout), and
// that go-plugin re-logged each line at its level.
func TestStderrIsHclogJSON(t *testing.T) {
	t.Parallel()
	in := Launch(t)
	checkPluginInfo(t, in)
	mustCall(t, in, mConfigSchema, nil)
	mustSetConfig(t, in, encodePlugin(t, in, undetectedPlugin), true)
	_ = setConfig(t, in, []byte{0xc1}, false) // invalid msgpack: an error worth logging
	if s, err := OpenStream(ctxT(t, 10*time.Second), in.Conn, mFingerprint, nil); err == nil {
		first(t, recvAsync(s), "Fingerprint", 5*time.Second)
	}
	in.MustKillGracefully(t) // waits for go-plugin's stderr reader to finish

	raw := checkStderrLines(t, in.Stderr.String())

	// go-plugin re-logs under the logger sub-named after the executable and
	// adds the parsed time as a "timestamp" pair; a plugin's own "@module"
	// key, passed through as a pair, overrides the module name.
	module := "agent." + filepath.Base(PluginPath(t))
	relogged := map[entry]int{}
	for _, line := range jsonLines(in.Logs.String()) {
		var obj map[string]any
		if json.Unmarshal([]byte(line), &obj) != nil {
			continue
		}
		if _, hasTS := obj["timestamp"]; !hasTS && obj["@module"] != module {
			continue
		}
		lvl, _ := obj["@level"].(string)
		msg, _ := obj["@message"].(string)
		relogged[entry{lvl, msg}]++
	}
	for _, e := range raw {
		if relogged[e] == 0 {
			t.Errorf("plugin line %+v was not re-logged by go-plugin at level %s", e, e.level)
			continue
		}
		relogged[e]--
	}
}
