package interop

// The kube-apiserver audit log of the Helm-chart test: every request at
// level Metadata (tests/kube/cluster passes KUBE_APISERVER_EXTRA_ARGS
// through), read back to count what one user did: 403s over the whole test,
// and requests received inside an idle window.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
`

// auditEnv writes the policy into dir and returns the `cluster up`
// environment that turns the audit log on, and the log's path.
func auditEnv(t testing.TB, dir string) (env, log string) {
	t.Helper()
	policy := filepath.Join(dir, "audit-policy.yaml")
	if err := os.WriteFile(policy, []byte(auditPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	log = filepath.Join(dir, "audit.log")
	return fmt.Sprintf("KUBE_APISERVER_EXTRA_ARGS=--audit-policy-file=%s --audit-log-path=%s --audit-log-maxsize=0", policy, log), log
}

type auditEvent struct {
	AuditID    string `json:"auditID"`
	Stage      string `json:"stage"`
	Verb       string `json:"verb"`
	RequestURI string `json:"requestURI"`
	User       struct {
		Username string `json:"username"`
	} `json:"user"`
	ResponseStatus struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"responseStatus"`
	Received time.Time `json:"requestReceivedTimestamp"`
}

func (e auditEvent) String() string {
	s := fmt.Sprintf("%s %s %s → %d", e.Received.Format("15:04:05.000"), e.Verb, e.RequestURI, e.ResponseStatus.Code)
	if e.ResponseStatus.Code >= 400 && e.ResponseStatus.Message != "" {
		s += " (" + e.ResponseStatus.Message + ")"
	}
	return s
}

// userRequests returns user's requests in the audit log, one per request
// (a long-running one logs ResponseStarted and ResponseComplete; the last
// stage seen wins), in the order received.
func userRequests(t testing.TB, log, user string) []auditEvent {
	t.Helper()
	f, err := os.Open(log)
	if err != nil {
		t.Fatalf("audit log: %v", err)
	}
	defer f.Close()
	byID := map[string]auditEvent{}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 4<<20)
	for sc.Scan() {
		var e auditEvent
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("audit log line: %v", err)
		}
		if e.User.Username == user {
			byID[e.AuditID] = e
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	out := make([]auditEvent, 0, len(byID))
	for _, e := range byID {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Received.Before(out[j].Received) })
	return out
}

// forbidden are the requests answered 403.
func forbidden(evs []auditEvent) []auditEvent {
	var out []auditEvent
	for _, e := range evs {
		if e.ResponseStatus.Code == 403 {
			out = append(out, e)
		}
	}
	return out
}

// receivedIn are the requests received in [from, to).
func receivedIn(evs []auditEvent, from, to time.Time) []auditEvent {
	var out []auditEvent
	for _, e := range evs {
		if !e.Received.Before(from) && e.Received.Before(to) {
			out = append(out, e)
		}
	}
	return out
}

func listEvents(evs []auditEvent, max int) string {
	var b strings.Builder
	for i, e := range evs {
		if i == max {
			fmt.Fprintf(&b, "\n  ... and %d more", len(evs)-max)
			break
		}
		b.WriteString("\n  " + e.String())
	}
	return b.String()
}

// verbSummary counts requests per verb and path (query dropped), and lists
// every write with its time.
func verbSummary(evs []auditEvent) string {
	counts := map[string]int{}
	var writes []string
	for _, e := range evs {
		path, _, _ := strings.Cut(e.RequestURI, "?")
		counts[e.Verb+" "+path]++
		switch e.Verb {
		case "get", "list", "watch":
		default:
			writes = append(writes, e.String())
		}
	}
	var b strings.Builder
	for _, k := range sortedKeys(counts) {
		fmt.Fprintf(&b, "\n  %4d %s", counts[k], k)
	}
	if len(writes) > 0 {
		b.WriteString("\n  writes:\n    " + strings.Join(writes, "\n    "))
	}
	return b.String()
}

// serviceAccountUser is the API user of a ServiceAccount token.
func serviceAccountUser(ns, sa string) string { return "system:serviceaccount:" + ns + ":" + sa }
