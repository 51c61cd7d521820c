package interop

// A Sentry pod of Dapr's chart without a kubelet: the Secret volume kept the
// way the kubelet's atomic writer keeps it (a `..<timestamp>` directory with
// the files, the `..data` symlink swapped by rename, one symlink per key),
// updated on every change of the Secret; and the container process run with
// exactly the chart's command line and env, as uid/gid 65532 with no
// capabilities, in a private mount namespace where the volume is mounted
// read-only at the chart's mountPath and the ServiceAccount token, CA and
// namespace at /var/run/secrets/kubernetes.io/serviceaccount (in-cluster
// config via KUBERNETES_SERVICE_HOST/PORT, as the kubelet sets them).

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// podUID is the user and group the chart's image runs as (distroless nonroot).
const podUID = 65532

// secretVolume is one pod's projection of the dapr-trust-bundle Secret.
type secretVolume struct {
	dir  string
	mode os.FileMode
	cur  string // current ..<timestamp> directory name
}

// openDir creates a world-traversable directory (t.TempDir is 0700, which uid
// 65532 cannot enter), removed at cleanup.
func openDir(t testing.TB, prefix string) string {
	t.Helper()
	d, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(d, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// update writes data as the kubelet's AtomicWriter does.
func (v *secretVolume) update(data map[string][]byte) error {
	ts, err := os.MkdirTemp(v.dir, time.Now().UTC().Format("..2006_01_02_15_04_05.")+"*")
	if err != nil {
		return err
	}
	if err := os.Chmod(ts, 0o755); err != nil {
		return err
	}
	for k, b := range data {
		f := filepath.Join(ts, k)
		if err := os.WriteFile(f, b, v.mode); err != nil {
			return err
		}
		if err := os.Chmod(f, v.mode); err != nil {
			return err
		}
	}
	tmp := filepath.Join(v.dir, "..data_tmp")
	if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(v.dir, "..data")); err != nil {
		return err
	}
	ents, err := os.ReadDir(v.dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		n := e.Name()
		if len(n) > 1 && n[:2] == ".." {
			continue
		}
		if _, ok := data[n]; !ok {
			if err := os.Remove(filepath.Join(v.dir, n)); err != nil {
				return err
			}
		}
	}
	for k := range data {
		if _, err := os.Lstat(filepath.Join(v.dir, k)); os.IsNotExist(err) {
			if err := os.Symlink(filepath.Join("..data", k), filepath.Join(v.dir, k)); err != nil {
				return err
			}
		}
	}
	if v.cur != "" {
		if err := os.RemoveAll(filepath.Join(v.dir, v.cur)); err != nil {
			return err
		}
	}
	v.cur = filepath.Base(ts)
	return nil
}

// projector keeps volumes in sync with a Secret: it reads the Secret (as the
// admin, whom the audit counts exclude) every 100 ms and projects every new
// resourceVersion into each volume.
type projector struct {
	k        *kubeCluster
	ns, name string
	mu       sync.Mutex
	vols     []*secretVolume
	rv       string    // last projected resourceVersion
	at       time.Time // when it was swapped in (all volumes)
	err      error
	changed  chan struct{} // closed and replaced on every projection
	stop     chan struct{}
	done     chan struct{}
}

func startProjector(t testing.TB, k *kubeCluster, ns, name string) *projector {
	t.Helper()
	p := &projector{k: k, ns: ns, name: name, changed: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{})}
	go p.loop()
	t.Cleanup(func() {
		close(p.stop)
		<-p.done
		if p.err != nil {
			t.Errorf("projecting Secret %s/%s: %v", ns, name, p.err)
		}
	})
	return p
}

// volume adds a pod's volume, filled with the current Secret before it returns.
func (p *projector) volume(t testing.TB, mode os.FileMode) *secretVolume {
	t.Helper()
	v := &secretVolume{dir: openDir(t, "helm-vol-"), mode: mode}
	rv, data, err := p.read()
	if err == nil {
		err = v.update(data)
	}
	if err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	p.vols = append(p.vols, v)
	if p.rv == "" {
		p.rv = rv
	}
	p.mu.Unlock()
	return v
}

func (p *projector) read() (string, map[string][]byte, error) {
	code, b, err := p.k.call(http.MethodGet, "/api/v1/namespaces/"+p.ns+"/secrets/"+p.name, nil)
	if err != nil {
		return "", nil, err
	}
	if code != http.StatusOK {
		return "", nil, fmt.Errorf("GET secret: HTTP %d: %s", code, b)
	}
	var s struct {
		Metadata struct {
			ResourceVersion string `json:"resourceVersion"`
		} `json:"metadata"`
		Data map[string]string `json:"data"`
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return "", nil, err
	}
	data := map[string][]byte{}
	for k, v := range s.Data {
		d, err := base64.StdEncoding.DecodeString(v)
		if err != nil {
			return "", nil, err
		}
		data[k] = d
	}
	return s.Metadata.ResourceVersion, data, nil
}

func (p *projector) loop() {
	defer close(p.done)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-tick.C:
		}
		rv, data, err := p.read()
		if err != nil {
			p.mu.Lock()
			p.err = err
			p.mu.Unlock()
			return
		}
		p.mu.Lock()
		if rv != p.rv {
			for _, v := range p.vols {
				if err := v.update(data); err != nil {
					p.err = err
					p.mu.Unlock()
					return
				}
			}
			p.rv, p.at = rv, time.Now()
			close(p.changed)
			p.changed = make(chan struct{})
		}
		p.mu.Unlock()
	}
}

// projected waits until resourceVersion rv (or a later one) is in every
// volume and returns when it was swapped in. resourceVersions are opaque but
// etcd revisions here; only equality and "a newer projection" are used.
func (p *projector) projected(t testing.TB, rv string, timeout time.Duration) time.Time {
	t.Helper()
	deadline := time.After(timeout)
	for {
		p.mu.Lock()
		got, at, ch, err := p.rv, p.at, p.changed, p.err
		p.mu.Unlock()
		if err != nil {
			t.Fatalf("projector: %v", err)
		}
		a, _ := strconv.ParseUint(got, 10, 64)
		b, _ := strconv.ParseUint(rv, 10, 64)
		if got == rv || a > b {
			return at
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("Secret %s/%s resourceVersion %s not projected within %s (have %s)", p.ns, p.name, rv, timeout, got)
		}
	}
}

// serviceAccountVolume is what the ServiceAccount admission plugin projects
// into every pod: a bound token (here a TokenRequest of ns/sa, 1 h), the
// cluster CA and the namespace.
func serviceAccountVolume(t testing.TB, k *kubeCluster, ns, sa string) string {
	t.Helper()
	d := openDir(t, "helm-sa-")
	ca, err := os.ReadFile(k.env["KUBE_CA_FILE"])
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{
		"token":     []byte(k.tokenRequest(t, ns, sa, nil, nil, 3600)),
		"ca.crt":    ca,
		"namespace": []byte(ns),
	} {
		if err := os.WriteFile(filepath.Join(d, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

// podSandbox runs argv in a private mount namespace (/run replaced by a
// tmpfs holding only the two mounted volumes, read-only; with "ro", the
// chart's readOnlyRootFilesystem, also /, /tmp, /var/tmp and /dev/shm
// read-only, only in that namespace) as podUID with no
// capabilities and no_new_privs; the process keeps the pid of the unshare
// command (each step execs the next). The parent-death signal is set after
// the uid change (a credential change clears it).
const podSandbox = `set -e
mount -t tmpfs -o mode=0755,size=1m tmpfs /run
mkdir -p "$3" /run/secrets/kubernetes.io/serviceaccount
mount --bind "$1" "$3"
mount -o remount,bind,ro "$3"
mount --bind "$2" /run/secrets/kubernetes.io/serviceaccount
mount -o remount,bind,ro /run/secrets/kubernetes.io/serviceaccount
if [ "$4" = ro ]; then
  for m in / /tmp /var/tmp /dev/shm; do
    if mountpoint -q "$m"; then mount -o remount,bind,ro "$m"; fi
  done
fi
shift 4
exec setpriv --reuid=65532 --regid=65532 --clear-groups --inh-caps=-all --bounding-set=-all --no-new-privs --pdeathsig=KILL -- "$@"
`

// podBinary copies bin into a directory uid 65532 can reach (the checkout
// may not be) and returns the copy.
func podBinary(t testing.TB, bin string) string {
	t.Helper()
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(openDir(t, "helm-bin-"), "sentry")
	if err := os.WriteFile(out, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return out
}

// startChartPod starts one replica: argv is the chart's (argv[0] /sentry is
// replaced by bin), env the chart's plus what the kubelet and the runtime
// add. It returns without waiting for health.
func startChartPod(t testing.TB, k *kubeCluster, c chartSentry, name, bin string, argv []string, vol *secretVolume, saDir string, ports [3]int) *sentryProc {
	t.Helper()
	u, err := url.Parse(k.url)
	if err != nil {
		t.Fatal(err)
	}
	s := &sentryProc{
		name:        name,
		bin:         bin,
		dir:         vol.dir,
		namespace:   helmNamespace,
		port:        ports[0],
		healthzPort: ports[1],
		metricsPort: ports[2],
		logs:        &syncBuffer{},
		exited:      make(chan struct{}),
	}
	script := filepath.Join(filepath.Dir(vol.dir), filepath.Base(vol.dir)+".sandbox.sh")
	if err := os.WriteFile(script, []byte(podSandbox), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(script) })
	rootFS := "rw"
	if c.readOnlyFS {
		rootFS = "ro"
	}
	args := append([]string{"--mount", "--propagation", "private", "--", "/bin/sh", script,
		vol.dir, saDir, c.credMount, rootFS, bin}, argv[1:]...)
	s.cmd = exec.Command("unshare", args...)
	s.cmd.Env = append([]string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=/",
		"HOSTNAME=" + name,
		"KUBERNETES_SERVICE_HOST=" + u.Hostname(),
		"KUBERNETES_SERVICE_PORT=" + u.Port(),
	}, c.env...)
	s.cmd.Stdout = s.logs
	s.cmd.Stderr = s.logs
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	stopped := false
	s.onStop = func() { stopped = true }
	t.Cleanup(func() {
		if !stopped {
			select {
			case <-s.exited:
				t.Errorf("%s had exited during the test: %v", name, s.err)
			default:
				if err := s.stop(); err != nil {
					t.Errorf("%s: %v", name, err)
				}
			}
		}
		if t.Failed() || os.Getenv("INTEROP_SHOW_LOGS") != "" {
			t.Logf("--- output of %s (%s) ---\n%s", name, c, s.logs.String())
		}
	})
	return s
}

// running fails the test if s has exited.
func running(t testing.TB, s *sentryProc) {
	t.Helper()
	select {
	case <-s.exited:
		t.Fatalf("%s exited: %v\n--- output ---\n%s", s.name, s.err, s.logs.String())
	default:
	}
}
