package interop

// Dapr's Helm chart as the Helm-chart test uses it: charts/dapr of the
// github.com/dapr/dapr module (the version this module requires), rendered
// by Helm's own install action (tests/helm/render), the objects Sentry needs
// picked out unchanged, and the sentry container of the rendered Deployment
// read back (command, args, env, ports, credentials volume) so that nothing
// about how Sentry runs is hard-coded here.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// helmNamespace is the release namespace (helm install -n dapr-system --create-namespace).
const helmNamespace = "dapr-system"

// daprModule is the module (and version) the chart comes from: the same Dapr
// this suite's client code is.
const daprModule = "github.com/dapr/dapr@v1.18.3"

// renderedChart is every object of one `helm template --include-crds`.
type renderedChart struct {
	values  []string
	objects []map[string]any
}

// goTool is the go command (GO, else go on PATH, else /usr/local/go/bin/go).
func goTool() string {
	if g := os.Getenv("GO"); g != "" {
		return g
	}
	if g, err := exec.LookPath("go"); err == nil {
		return g
	}
	return "/usr/local/go/bin/go"
}

// daprChartDir downloads (or finds in the module cache) daprModule and
// returns its charts/dapr directory.
func daprChartDir(t testing.TB) string {
	t.Helper()
	out, err := exec.Command(goTool(), "mod", "download", "-json", daprModule).Output()
	if err != nil {
		t.Fatalf("go mod download -json %s: %v", daprModule, err)
	}
	var m struct{ Dir, Error string }
	if err := json.Unmarshal(out, &m); err != nil || m.Dir == "" {
		t.Fatalf("go mod download -json %s: no Dir (%v %s): %s", daprModule, err, m.Error, out)
	}
	dir := filepath.Join(m.Dir, "charts", "dapr")
	if _, err := os.Stat(filepath.Join(dir, "Chart.yaml")); err != nil {
		t.Fatal(err)
	}
	return dir
}

// buildRenderer builds tests/helm/render (Helm's Go module, pinned in
// tests/helm/go.mod) into dir.
func buildRenderer(t testing.TB, repo, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "render")
	cmd := exec.Command(goTool(), "build", "-o", bin, "./render")
	cmd.Dir = filepath.Join(repo, "tests", "helm")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build tests/helm/render: %v\n%s", err, out)
	}
	return bin
}

// renderChart renders the chart into the release namespace with the given
// --set values.
func renderChart(t testing.TB, renderer, chart string, values ...string) *renderedChart {
	t.Helper()
	args := []string{"-chart", chart, "-namespace", helmNamespace}
	for _, v := range values {
		args = append(args, "-set", v)
	}
	out, err := exec.Command(renderer, args...).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("render %v: %v\n%s", values, err, stderr)
	}
	r := &renderedChart{values: values}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		var obj map[string]any
		if err := json.Unmarshal(sc.Bytes(), &obj); err != nil {
			t.Fatalf("render output: %v", err)
		}
		r.objects = append(r.objects, obj)
	}
	if len(r.objects) == 0 {
		t.Fatalf("render %v printed no objects", values)
	}
	return r
}

func objKind(o map[string]any) string { s, _ := o["kind"].(string); return s }
func objName(o map[string]any) string {
	s, _ := dig(o, "metadata", "name").(string)
	return s
}

// dig walks nested maps.
func dig(v any, path ...string) any {
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[p]
	}
	return v
}

// find returns the rendered kind/name, failing the test if there is none.
func (r *renderedChart) find(t testing.TB, kind, name string) map[string]any {
	t.Helper()
	for _, o := range r.objects {
		if objKind(o) == kind && objName(o) == name {
			return o
		}
	}
	t.Fatalf("the chart rendered with %v has no %s %s", r.values, kind, name)
	return nil
}

// sentryObjects are the rendered objects Sentry's pod depends on, as they
// are: the CRDs, the sentry ServiceAccount, its ClusterRole/Role and
// bindings, Configuration daprsystem, and the dapr-trust-bundle Secret and
// ConfigMap. (The Namespace is helm's --create-namespace; the test creates it.)
func (r *renderedChart) sentryObjects(t testing.TB) (crds, rest []map[string]any) {
	t.Helper()
	for _, o := range r.objects {
		if objKind(o) == "CustomResourceDefinition" {
			crds = append(crds, o)
		}
	}
	if len(crds) == 0 {
		t.Fatalf("the chart rendered no CustomResourceDefinition")
	}
	for _, kn := range [][2]string{
		{"ServiceAccount", "dapr-sentry"},
		{"ClusterRole", "dapr-sentry"}, {"ClusterRoleBinding", "dapr-sentry"},
		{"Role", "dapr-sentry"}, {"RoleBinding", "dapr-sentry"},
		{"Configuration", "daprsystem"},
		{"Secret", "dapr-trust-bundle"}, {"ConfigMap", "dapr-trust-bundle"},
	} {
		rest = append(rest, r.find(t, kn[0], kn[1]))
	}
	return crds, rest
}

// applyObjects writes objects as JSON documents of one YAML stream and
// server-side applies them (tests/kube/kctl) unchanged.
func (k *kubeCluster) applyObjects(t testing.TB, name string, objects []map[string]any) {
	t.Helper()
	var b bytes.Buffer
	for _, o := range objects {
		j, err := json.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString("---\n")
		b.Write(j)
		b.WriteString("\n")
	}
	file := filepath.Join(k.dir, name+".yaml")
	if err := os.WriteFile(file, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	k.apply(t, file)
}

// chartSentry is how the rendered Deployment runs Sentry.
type chartSentry struct {
	replicas    int
	sa          string   // serviceAccountName
	argv        []string // command + args
	env         []string // KEY=VALUE, fieldRefs resolved for a pod in helmNamespace
	grpcPort    int      // the first containerPort
	healthzPort int      // readinessProbe.httpGet.port
	metricsPort int      // value of --metrics-port
	credMount   string   // mountPath of the dapr-trust-bundle volume
	credMode    os.FileMode
	nonRoot     bool // securityContext.runAsNonRoot
	readOnlyFS  bool // securityContext.readOnlyRootFilesystem
}

func asInt(v any) (int, bool) {
	switch n := v.(type) {
	case float64:
		return int(n), true
	case string:
		i, err := strconv.Atoi(n)
		return i, err == nil
	}
	return 0, false
}

// sentryDeployment reads Deployment dapr-sentry; anything the test does not
// know how to reproduce outside a kubelet fails the test.
func (r *renderedChart) sentryDeployment(t testing.TB) chartSentry {
	t.Helper()
	d := r.find(t, "Deployment", "dapr-sentry")
	var c chartSentry
	if n, ok := asInt(dig(d, "spec", "replicas")); ok {
		c.replicas = n
	} else {
		c.replicas = 1
	}
	spec, _ := dig(d, "spec", "template", "spec").(map[string]any)
	c.sa, _ = spec["serviceAccountName"].(string)
	var ctr map[string]any
	cs, _ := spec["containers"].([]any)
	for _, x := range cs {
		if m, _ := x.(map[string]any); m != nil && m["name"] == "dapr-sentry" {
			ctr = m
		}
	}
	if ctr == nil {
		t.Fatalf("Deployment dapr-sentry has no container dapr-sentry")
	}
	strs := func(v any) []string {
		var out []string
		l, _ := v.([]any)
		for _, x := range l {
			s, ok := x.(string)
			if !ok {
				t.Fatalf("non-string command/arg %v", x)
			}
			out = append(out, s)
		}
		return out
	}
	c.argv = append(strs(ctr["command"]), strs(ctr["args"])...)
	if len(c.argv) == 0 || c.argv[0] != "/sentry" {
		t.Fatalf("sentry container command %v, want /sentry", c.argv)
	}
	envs, _ := ctr["env"].([]any)
	for _, x := range envs {
		e, _ := x.(map[string]any)
		name, _ := e["name"].(string)
		if v, ok := e["value"].(string); ok {
			c.env = append(c.env, name+"="+v)
			continue
		}
		if fp := dig(e, "valueFrom", "fieldRef", "fieldPath"); fp == "metadata.namespace" {
			c.env = append(c.env, name+"="+helmNamespace)
			continue
		}
		t.Fatalf("sentry container env %v: only values and the metadata.namespace fieldRef are reproduced", e)
	}
	ports, _ := ctr["ports"].([]any)
	if len(ports) == 0 {
		t.Fatalf("sentry container has no ports")
	}
	c.grpcPort, _ = asInt(dig(ports[0], "containerPort"))
	c.healthzPort, _ = asInt(dig(ctr, "readinessProbe", "httpGet", "port"))
	for i, a := range c.argv {
		if a == "--metrics-port" && i+1 < len(c.argv) {
			c.metricsPort, _ = strconv.Atoi(c.argv[i+1])
		}
	}
	if c.grpcPort == 0 || c.healthzPort == 0 || c.metricsPort == 0 {
		t.Fatalf("sentry ports: grpc %d healthz %d metrics %d; want all from the Deployment", c.grpcPort, c.healthzPort, c.metricsPort)
	}
	mounts, _ := ctr["volumeMounts"].([]any)
	for _, x := range mounts {
		if dig(x, "name") == "credentials" {
			c.credMount, _ = dig(x, "mountPath").(string)
			if dig(x, "readOnly") != true {
				t.Fatalf("credentials volume mount is not readOnly")
			}
		}
	}
	vols, _ := spec["volumes"].([]any)
	c.credMode = 0o644 // the API default of secret.defaultMode (420)
	found := false
	for _, x := range vols {
		if dig(x, "name") == "credentials" {
			found = dig(x, "secret", "secretName") == "dapr-trust-bundle"
			if m, ok := asInt(dig(x, "secret", "defaultMode")); ok {
				c.credMode = os.FileMode(m)
			}
		}
	}
	if !found || !strings.HasPrefix(c.credMount, "/var/run/") {
		t.Fatalf("want Secret dapr-trust-bundle mounted under /var/run/ as volume credentials; got mount %q", c.credMount)
	}
	c.nonRoot = dig(ctr, "securityContext", "runAsNonRoot") == true
	c.readOnlyFS = dig(ctr, "securityContext", "readOnlyRootFilesystem") == true
	return c
}

// withPorts returns argv for a replica in the same network namespace as the
// first one: in a cluster each pod has its own, here they share loopback.
// The chart passes --metrics-port; --port and --healthz-port are defaults it
// relies on, so they are added.
func (c chartSentry) withPorts(grpc, healthz, metrics int) []string {
	out := append([]string{}, c.argv...)
	for i := range out {
		if out[i] == "--metrics-port" && i+1 < len(out) {
			out[i+1] = strconv.Itoa(metrics)
		}
	}
	return append(out, "--port", strconv.Itoa(grpc), "--healthz-port", strconv.Itoa(healthz))
}

func (c chartSentry) String() string {
	return fmt.Sprintf("%s %s (replicas %d, sa %s)", strings.Join(c.env, " "), strings.Join(c.argv, " "), c.replicas, c.sa)
}
