package interop

// Logs like Dapr's: SENTRY_BIN and Dapr's own sentry run side by side with --log-as-json, start,
// sign one certificate and stop; every line of both is a JSON object with Dapr's fixed keys, of
// the same kinds (time in RFC 3339 with nanoseconds, type "log", the host name as instance, a
// dapr.* scope (ours dapr.sentry*), a logrus level name). Without --log-as-json, output to a pipe
// carries no escape byte and every line is logfmt starting with time=.

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"
)

var fixedLogKeys = []string{"instance", "level", "msg", "scope", "time", "type", "ver"}

func runAndLog(t *testing.T, bin string, args ...string) []string {
	t.Helper()
	s := startSentry(t, sentryOpts{bin: bin, extraArgs: args})
	anchors := s.anchorsPEM(t)
	signInsecure(t, dialCA(t, s, anchors), genKey(t, keyEd25519), "logapp", "default", "")
	s.stopNow(t)
	var lines []string
	for _, l := range strings.Split(s.logs.String(), "\n") {
		if l != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) == 0 {
		t.Fatalf("%s wrote no log line", bin)
	}
	return lines
}

func checkJSONLine(t *testing.T, who, line string) {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(line), &m); err != nil {
		t.Fatalf("%s: not a JSON line: %q: %v", who, line, err)
	}
	for _, k := range fixedLogKeys {
		if _, ok := m[k].(string); !ok {
			t.Errorf("%s: key %q missing or not a string in %s", who, k, line)
		}
	}
	host, _ := os.Hostname()
	if m["instance"] != host || m["type"] != "log" {
		t.Errorf("%s: instance/type: %s", who, line)
	}
	if ts, _ := m["time"].(string); ts != "" {
		if _, err := time.Parse(time.RFC3339Nano, ts); err != nil {
			t.Errorf("%s: time %q: %v", who, ts, err)
		}
	}
	switch m["level"] {
	case "debug", "info", "warning", "error", "fatal":
	default:
		t.Errorf("%s: level %v", who, m["level"])
	}
	// Dapr's sentry also logs as dapr.runtime.security and dapr.signals; ours as dapr.sentry*.
	scope, _ := m["scope"].(string)
	if !strings.HasPrefix(scope, "dapr.") || (who == "ours" && scope != "dapr.sentry" && !strings.HasPrefix(scope, "dapr.sentry.")) {
		t.Errorf("%s: scope %q", who, scope)
	}
}

func TestLogSchemaMatchesDapr(t *testing.T) {
	dapr := requireDaprSentry(t)
	for _, who := range []struct{ name, bin string }{{"dapr", dapr}, {"ours", sentryBin}} {
		lines := runAndLog(t, who.bin, "--log-as-json", "--log-level", "DEBUG")
		for _, l := range lines {
			checkJSONLine(t, who.name, l)
		}
		t.Logf("%s: %d JSON lines, first: %s", who.name, len(lines), lines[0])
	}
}

func TestTextLogsToAPipeHaveNoEscapes(t *testing.T) {
	for _, l := range runAndLog(t, sentryBin, "--log-level=Debug") {
		if strings.ContainsRune(l, 0x1b) {
			t.Errorf("escape byte in %q", l)
		}
		if !strings.HasPrefix(l, `time="`) || !strings.Contains(l, " level=") || !strings.Contains(l, " msg=") {
			t.Errorf("not logfmt like Dapr's: %q", l)
		}
	}
}
