package interop

// A real kube-apiserver + etcd (tests/kube/cluster) for the Kubernetes-mode
// test, and a minimal REST client for it (admin client certificate, JSON over
// HTTPS) — no client-go, so the suite compiles no more than it did. YAML files
// are applied with tests/kube/kctl, the same tool the Rust Kubernetes tests use.

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

const (
	// tests/kube/cluster up waits up to KUBE_READY_TIMEOUT (120 s) for /readyz;
	// the build it starts with is cached (scripts/test runs tests/kube/build
	// first), but a cold build takes minutes.
	kubeUpTimeout   = 15 * time.Minute
	kubeCallTimeout = 60 * time.Second
)

// repoRoot is the checkout root (the package directory is tests/interop).
func repoRoot(t testing.TB) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Clean(filepath.Join(wd, "..", ".."))
	if _, err := os.Stat(filepath.Join(root, "tests", "kube", "cluster")); err != nil {
		t.Fatalf("tests/kube/cluster not found under %s: %v", root, err)
	}
	return root
}

type kubeCluster struct {
	repo string
	dir  string
	env  map[string]string
	url  string
	http *http.Client
}

// startKubeCluster runs `tests/kube/cluster up` on a fresh directory, with the
// test binary's pid as KUBE_CLUSTER_WATCH_PID (the script's watchdog tears the
// cluster down if this process dies), and `down` at test cleanup. extraEnv
// (KEY=VALUE) goes to `up`, e.g. KUBE_APISERVER_EXTRA_ARGS.
func startKubeCluster(t testing.TB, extraEnv ...string) *kubeCluster {
	t.Helper()
	repo := repoRoot(t)
	dir := t.TempDir()
	script := filepath.Join(repo, "tests", "kube", "cluster")

	ctx, cancel := context.WithTimeout(context.Background(), kubeUpTimeout)
	defer cancel()
	start := time.Now()
	cmd := exec.CommandContext(ctx, script, "up", dir)
	cmd.Env = append(append(os.Environ(), "KUBE_CLUSTER_WATCH_PID="+strconv.Itoa(os.Getpid())), extraEnv...)
	out, err := cmd.CombinedOutput()
	// Registered even if `up` failed: `down` is idempotent and stops whatever
	// did start. Cleanups run LIFO, so this runs before t.TempDir's removal.
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("INTEROP_SHOW_LOGS") != "" {
			t.Logf("--- last lines of %s/logs/kube-apiserver.log ---\n%s",
				dir, tailFile(filepath.Join(dir, "logs", "kube-apiserver.log"), 40))
		}
		out, err := exec.Command(script, "down", dir).CombinedOutput()
		if err != nil {
			t.Errorf("tests/kube/cluster down: %v\n%s", err, out)
		}
	})
	if err != nil {
		t.Fatalf("tests/kube/cluster up %s: %v\n%s\n--- kube-apiserver.log ---\n%s", dir, err, out,
			tailFile(filepath.Join(dir, "logs", "kube-apiserver.log"), 40))
	}
	t.Logf("kube cluster up in %s (dir %s)", time.Since(start).Round(100*time.Millisecond), dir)

	env, err := readEnvFile(filepath.Join(dir, "env"))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"APISERVER_URL", "KUBE_CA_FILE", "KUBE_ADMIN_CERT", "KUBE_ADMIN_KEY"} {
		if env[k] == "" {
			t.Fatalf("%s/env has no %s", dir, k)
		}
	}
	caPEM, err := os.ReadFile(env["KUBE_CA_FILE"])
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatalf("no certificate in %s", env["KUBE_CA_FILE"])
	}
	admin, err := tls.LoadX509KeyPair(env["KUBE_ADMIN_CERT"], env["KUBE_ADMIN_KEY"])
	if err != nil {
		t.Fatal(err)
	}
	return &kubeCluster{
		repo: repo,
		dir:  dir,
		env:  env,
		url:  strings.TrimRight(env["APISERVER_URL"], "/"),
		http: &http.Client{
			Timeout: kubeCallTimeout,
			Transport: &http.Transport{TLSClientConfig: &tls.Config{
				RootCAs:      pool,
				Certificates: []tls.Certificate{admin},
				MinVersion:   tls.VersionTLS12,
			}},
		},
	}
}

func readEnvFile(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	env := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if k, v, ok := strings.Cut(l, "="); ok {
			env[k] = v
		}
	}
	return env, nil
}

func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// apply server-side applies every document of a YAML file (tests/kube/kctl;
// waits for CRDs to be Established).
func (k *kubeCluster) apply(t testing.TB, file string) {
	t.Helper()
	out, err := exec.Command(filepath.Join(k.repo, "tests", "kube", "kctl"),
		"--env", filepath.Join(k.dir, "env"), "apply", file).CombinedOutput()
	if err != nil {
		t.Fatalf("kctl apply %s: %v\n%s", file, err, out)
	}
}

// call performs one admin API request. body is JSON-encoded unless nil.
// Transport errors are retried for a while (a loaded machine can make the API
// server slow to answer), HTTP errors are returned as they are.
func (k *kubeCluster) call(method, path string, body any) (int, []byte, error) {
	var data []byte
	if body != nil {
		var err error
		if data, err = json.Marshal(body); err != nil {
			return 0, nil, err
		}
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		if attempt > 0 {
			time.Sleep(time.Second)
		}
		req, err := http.NewRequest(method, k.url+path, bytes.NewReader(data))
		if err != nil {
			return 0, nil, err
		}
		req.Header.Set("Accept", "application/json")
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := k.http.Do(req)
		if err != nil {
			lastErr = err
			continue
		}
		out, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			lastErr = err
			continue
		}
		return resp.StatusCode, out, nil
	}
	return 0, nil, fmt.Errorf("%s %s: %w", method, path, lastErr)
}

// mustCall performs a request and decodes the JSON answer into out (if not
// nil); any status other than 2xx (or 409 when allowConflict) fails the test.
func (k *kubeCluster) mustCall(t testing.TB, method, path string, body, out any, allowConflict bool) {
	t.Helper()
	code, b, err := k.call(method, path, body)
	if err != nil {
		t.Fatal(err)
	}
	if code == http.StatusConflict && allowConflict {
		return
	}
	if code < 200 || code > 299 {
		t.Fatalf("%s %s: HTTP %d: %s", method, path, code, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: decoding answer: %v", method, path, err)
		}
	}
}

type objectMeta struct {
	Name        string            `json:"name,omitempty"`
	Namespace   string            `json:"namespace,omitempty"`
	UID         string            `json:"uid,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

func (k *kubeCluster) createNamespace(t testing.TB, ns string) {
	t.Helper()
	k.mustCall(t, http.MethodPost, "/api/v1/namespaces", map[string]any{
		"apiVersion": "v1", "kind": "Namespace", "metadata": objectMeta{Name: ns},
	}, nil, true)
}

func (k *kubeCluster) createServiceAccount(t testing.TB, ns, name string) {
	t.Helper()
	k.mustCall(t, http.MethodPost, "/api/v1/namespaces/"+ns+"/serviceaccounts", map[string]any{
		"apiVersion": "v1", "kind": "ServiceAccount", "metadata": objectMeta{Name: name},
	}, nil, true)
}

// createPod creates a Pod (never scheduled: there is no kubelet) running as
// service account sa, and returns its UID.
func (k *kubeCluster) createPod(t testing.TB, ns, name, sa string, annotations map[string]string) string {
	t.Helper()
	var created struct {
		Metadata objectMeta `json:"metadata"`
	}
	k.mustCall(t, http.MethodPost, "/api/v1/namespaces/"+ns+"/pods", map[string]any{
		"apiVersion": "v1",
		"kind":       "Pod",
		"metadata":   objectMeta{Name: name, Annotations: annotations},
		"spec": map[string]any{
			"serviceAccountName": sa,
			"containers":         []any{map[string]any{"name": "app", "image": "example.invalid/app:1"}},
		},
	}, &created, false)
	if created.Metadata.UID == "" {
		t.Fatalf("pod %s/%s created without a UID", ns, name)
	}
	return created.Metadata.UID
}

type boundPod struct{ name, uid string }

// tokenRequest issues a service-account token (TokenRequest), bound to pod if
// given.
func (k *kubeCluster) tokenRequest(t testing.TB, ns, sa string, pod *boundPod, audiences []string, expirationSeconds int) string {
	t.Helper()
	spec := map[string]any{"audiences": audiences, "expirationSeconds": expirationSeconds}
	if pod != nil {
		spec["boundObjectRef"] = map[string]any{"apiVersion": "v1", "kind": "Pod", "name": pod.name, "uid": pod.uid}
	}
	var resp struct {
		Status struct {
			Token string `json:"token"`
		} `json:"status"`
	}
	k.mustCall(t, http.MethodPost, "/api/v1/namespaces/"+ns+"/serviceaccounts/"+sa+"/token", map[string]any{
		"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec,
	}, &resp, false)
	if resp.Status.Token == "" {
		t.Fatalf("TokenRequest for %s/%s returned no token", ns, sa)
	}
	return resp.Status.Token
}

// createConfiguration creates a dapr.io/v1alpha1 Configuration.
func (k *kubeCluster) createConfiguration(t testing.TB, ns, name string, spec map[string]any) {
	t.Helper()
	k.mustCall(t, http.MethodPost, "/apis/dapr.io/v1alpha1/namespaces/"+ns+"/configurations", map[string]any{
		"apiVersion": "dapr.io/v1alpha1", "kind": "Configuration",
		"metadata": objectMeta{Name: name}, "spec": spec,
	}, nil, false)
}

// configMapData returns the data of a ConfigMap (nil if it does not exist).
func (k *kubeCluster) configMapData(t testing.TB, ns, name string) map[string]string {
	t.Helper()
	code, b, err := k.call(http.MethodGet, "/api/v1/namespaces/"+ns+"/configmaps/"+name, nil)
	if err != nil {
		t.Fatal(err)
	}
	if code == http.StatusNotFound {
		return nil
	}
	if code != http.StatusOK {
		t.Fatalf("GET configmap %s/%s: HTTP %d: %s", ns, name, code, b)
	}
	var cm struct {
		Data map[string]string `json:"data"`
	}
	if err := json.Unmarshal(b, &cm); err != nil {
		t.Fatal(err)
	}
	return cm.Data
}

// secretData returns the decoded data of a Secret (nil if it does not exist).
func (k *kubeCluster) secretData(t testing.TB, ns, name string) map[string][]byte {
	t.Helper()
	code, b, err := k.call(http.MethodGet, "/api/v1/namespaces/"+ns+"/secrets/"+name, nil)
	if err != nil {
		t.Fatal(err)
	}
	if code == http.StatusNotFound {
		return nil
	}
	if code != http.StatusOK {
		t.Fatalf("GET secret %s/%s: HTTP %d: %s", ns, name, code, b)
	}
	var s struct {
		Data map[string]string `json:"data"`
	}
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	out := make(map[string][]byte, len(s.Data))
	for k, v := range s.Data {
		d, err := base64.StdEncoding.DecodeString(v)
		if err != nil {
			t.Fatalf("secret %s/%s key %s: %v", ns, name, k, err)
		}
		out[k] = d
	}
	return out
}

// createHelmTrustBundle creates the empty dapr-trust-bundle Secret and
// ConfigMap in cp, as charts/dapr/charts/dapr_sentry/templates/
// dapr_sentry_deployment.yaml renders them without user-supplied
// certificates: no data at all.
func (k *kubeCluster) createHelmTrustBundle(t testing.TB, cp string) {
	t.Helper()
	for _, kind := range []string{"secrets", "configmaps"} {
		k.mustCall(t, http.MethodPost, "/api/v1/namespaces/"+cp+"/"+kind, map[string]any{
			"apiVersion": "v1",
			"kind":       map[string]string{"secrets": "Secret", "configmaps": "ConfigMap"}[kind],
			"metadata": map[string]any{
				"name": "dapr-trust-bundle", "labels": map[string]string{"app": "dapr-sentry"},
			},
		}, nil, false)
	}
}

// applyDeployFile applies deploy/NAME with its namespace dapr-system replaced by cp.
func (k *kubeCluster) applyDeployFile(t testing.TB, cp, name string) {
	t.Helper()
	text, err := os.ReadFile(filepath.Join(k.repo, "deploy", name))
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(k.dir, cp+"-"+name)
	if err := os.WriteFile(file, bytes.ReplaceAll(text, []byte("dapr-system"), []byte(cp)), 0o644); err != nil {
		t.Fatal(err)
	}
	k.apply(t, file)
}

// controlPlane creates namespace cp with the RBAC of deploy/rbac.yaml (its
// namespace replaced by cp, the ClusterRoleBinding renamed so that several
// control planes can coexist), exactly as the Rust Kubernetes tests do, and
// returns a kubeconfig holding a token of the dapr-sentry ServiceAccount:
// Sentry runs with exactly the permissions we ship.
func (k *kubeCluster) controlPlane(t testing.TB, cp string) string {
	t.Helper()
	k.createNamespace(t, cp)
	rbac, err := os.ReadFile(filepath.Join(k.repo, "deploy", "rbac.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	const crb = "kind: ClusterRoleBinding\nmetadata:\n  name: dapr-sentry"
	if !bytes.Contains(rbac, []byte(crb)) {
		t.Fatalf("deploy/rbac.yaml has no %q", crb)
	}
	text := strings.ReplaceAll(string(rbac), crb, crb+"-"+cp)
	text = strings.ReplaceAll(text, "dapr-system", cp)
	file := filepath.Join(k.dir, "rbac-"+cp+".yaml")
	if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	k.apply(t, file)

	return k.serviceAccountKubeconfig(t, cp, "dapr-sentry")
}

// serviceAccountKubeconfig writes a kubeconfig holding a TokenRequest token
// (1 h) of service account ns/sa and returns its path.
func (k *kubeCluster) serviceAccountKubeconfig(t testing.TB, ns, sa string) string {
	t.Helper()
	token := k.tokenRequest(t, ns, sa, nil, nil, 3600)
	caPEM, err := os.ReadFile(k.env["KUBE_CA_FILE"])
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: %s
  user:
    token: %s
contexts:
- name: test
  context:
    cluster: test
    user: %s
    namespace: %s
current-context: test
`, k.url, base64.StdEncoding.EncodeToString(caPEM), sa, token, sa, ns)
	path := filepath.Join(k.dir, sa+"-"+ns+".kubeconfig")
	if err := os.WriteFile(path, []byte(kubeconfig), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
