package interop

// Kubernetes mode: the Sentry under test runs with --mode kubernetes against a
// real kube-apiserver (tests/kube/cluster), with exactly the RBAC of
// deploy/rbac.yaml, and Dapr's real client (pkg/security v1.18.3) is configured
// the way daprd is in a pod: Kubernetes mode, NAMESPACE = the pod's namespace,
// the trust anchors of the dapr-trust-bundle ConfigMap, the control-plane trust
// domain and namespace of the Sentry, and a pod-bound service-account token
// read from DAPR_SENTRY_TOKEN_FILE (which Kubernetes mode sends with the
// KUBERNETES validator).

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/dapr/dapr/pkg/healthz"
	"github.com/dapr/dapr/pkg/modes"
	"github.com/dapr/dapr/pkg/security"
	securityconsts "github.com/dapr/dapr/pkg/security/consts"
)

const (
	kubeTrustDomain = "cluster.local" // Sentry's --trust-domain in Kubernetes mode

	// workloadCertTTL / allowedClockSkew of the daprsystem Configuration in the
	// control-plane namespace. Long enough that no client renews during the
	// test (a renewal would read DAPR_SENTRY_TOKEN_FILE again; see daprdEnvMu).
	kubeWorkloadTTL = 2 * time.Hour
	kubeClockSkew   = 5 * time.Minute

	// Kubernetes mode is ready only once the validator's caches are synced.
	kubeSentryHealthyTimeout = 120 * time.Second
	// Generous: the first request also waits for TokenReview and a pod lookup.
	kubeClientReadyTimeout = 90 * time.Second
)

// ---------------------------------------------------------------------------
// Sentry in Kubernetes mode

// startKubeSentry starts the Sentry under test the way deploy/deployment.yaml
// runs it (--mode kubernetes --trust-domain cluster.local, NAMESPACE = its
// namespace), outside the cluster: --kubeconfig with the dapr-sentry
// ServiceAccount's token, and the root check skipped (the test runs as root).
// --issuer-credentials points at an empty temporary directory so that nothing
// can reach the default /var/run/secrets path; in Kubernetes mode the bundle
// lives in the dapr-trust-bundle Secret, and the directory must stay empty
// (checked at cleanup).
func startKubeSentry(t testing.TB, kubeconfig, cp string) *sentryProc {
	t.Helper()
	return startKubeSentryBin(t, sentryBin, kubeconfig, cp)
}

// startKubeSentryBin is startKubeSentry for any binary (the Sentry under test
// or $DAPR_SENTRY_BIN), with extra flags; stopNow stops it before cleanup.
func startKubeSentryBin(t testing.TB, bin, kubeconfig, cp string, extra ...string) *sentryProc {
	t.Helper()
	workDir := t.TempDir()
	ports, err := freePorts(3)
	if err != nil {
		t.Fatal(err)
	}
	s := &sentryProc{
		name:        filepath.Base(bin),
		bin:         bin,
		dir:         filepath.Join(workDir, "creds"),
		namespace:   cp,
		port:        ports[0],
		healthzPort: ports[1],
		metricsPort: ports[2],
		logs:        &syncBuffer{},
		exited:      make(chan struct{}),
	}
	// Dapr's sentry watches this directory even in Kubernetes mode and exits if
	// it is missing.
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	s.cmd = execSentry(s, append([]string{"--mode", "kubernetes", "--kubeconfig", kubeconfig, "--trust-domain", kubeTrustDomain}, extra...)...)
	s.cmd.Env = append(os.Environ(), "NAMESPACE="+cp, "DAPR_UNSAFE_SKIP_CONTAINER_UID_GID_CHECK=true")
	if err := s.start(); err != nil {
		t.Fatalf("start %s: %v", s.bin, err)
	}
	stopped := false
	s.onStop = func() { stopped = true }
	t.Cleanup(func() {
		if !stopped {
			if err := s.stop(); err != nil {
				t.Errorf("%s: %v", s.bin, err)
			}
		}
		if ents, err := os.ReadDir(s.dir); err != nil || len(ents) != 0 {
			var names []string
			for _, e := range ents {
				names = append(names, e.Name())
			}
			t.Errorf("Kubernetes mode wrote to --issuer-credentials %s: %v (err %v); the bundle belongs in the Secret only", s.dir, names, err)
		}
		if t.Failed() || os.Getenv("INTEROP_SHOW_LOGS") != "" {
			t.Logf("--- output of NAMESPACE=%s %s ---\n%s", cp, s.args(), s.logs.String())
		}
	})
	if err := s.waitHealthy(kubeSentryHealthyTimeout); err != nil {
		t.Fatal(err)
	}
	t.Logf("started %s in Kubernetes mode: grpc=%d healthz=%d metrics=%d NAMESPACE=%s",
		s.bin, s.port, s.healthzPort, s.metricsPort, cp)
	return s
}

func execSentry(s *sentryProc, extra ...string) *exec.Cmd {
	args := append([]string{
		"--issuer-credentials", s.dir,
		"--port", strconv.Itoa(s.port),
		"--healthz-port", strconv.Itoa(s.healthzPort),
		"--metrics-port", strconv.Itoa(s.metricsPort),
	}, extra...)
	cmd := exec.Command(s.bin, args...)
	cmd.Stdout = s.logs
	cmd.Stderr = s.logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// ---------------------------------------------------------------------------
// Dapr's client in Kubernetes mode

// daprdEnvMu serialises the process environment Dapr's client reads:
// pkg/security reads NAMESPACE (the request namespace) in security.New and
// DAPR_SENTRY_TOKEN_FILE each time it asks Sentry for a certificate. A real
// daprd has one of each per process; here several clients share one process,
// so each client gets its environment while it is created and obtains its
// first SVID, and the variables are restored afterwards. The clients never
// renew during the test (kubeWorkloadTTL), and no other test runs at the same
// time (no top-level test calls t.Parallel, and this one must not either:
// t.Setenv enforces that).
var daprdEnvMu sync.Mutex

func withDaprdEnv(env map[string]string, fn func()) {
	daprdEnvMu.Lock()
	defer daprdEnvMu.Unlock()
	type saved struct {
		v  string
		ok bool
	}
	old := map[string]saved{}
	for k, v := range env {
		ov, ok := os.LookupEnv(k)
		old[k] = saved{ov, ok}
		os.Setenv(k, v)
	}
	defer func() {
		for k, o := range old {
			if o.ok {
				os.Setenv(k, o.v)
			} else {
				os.Unsetenv(k)
			}
		}
	}()
	fn()
}

type kubeClientOpts struct {
	appID     string
	podNS     string // the pod's namespace: NAMESPACE env (the injector sets it)
	tokenFile string // DAPR_SENTRY_TOKEN_FILE
	// as the injector configures daprd (DAPR_CONTROLPLANE_NAMESPACE /
	// DAPR_CONTROLPLANE_TRUST_DOMAIN); default trust domain: kubeTrustDomain
	cpNamespace   string
	cpTrustDomain string
	anchors       []byte // DAPR_TRUST_ANCHORS: the ConfigMap's ca.crt
}

func (o *kubeClientOpts) defaults() {
	if o.cpTrustDomain == "" {
		o.cpTrustDomain = kubeTrustDomain
	}
}

func (o kubeClientOpts) env() map[string]string {
	return map[string]string{
		"NAMESPACE":                          o.podNS,
		securityconsts.SentryTokenFileEnvVar: o.tokenFile,
		// Dapr refuses to run as root in Kubernetes mode; the test runs as root.
		"DAPR_UNSAFE_SKIP_CONTAINER_UID_GID_CHECK": "true",
	}
}

// newKubeProvider is security.New with exactly the options daprd passes
// (cmd/daprd/app/app.go in v1.18.3) when the injector started it in a pod:
// no OverrideRequestNamespace (the namespace comes from NAMESPACE), no
// SentryTokenFile option (that would select the JWKS validator; the token
// comes from DAPR_SENTRY_TOKEN_FILE, which Kubernetes mode sends with
// KUBERNETES).
func newKubeProvider(t testing.TB, s *sentryProc, o kubeClientOpts) security.Provider {
	t.Helper()
	p, err := security.New(context.Background(), security.Options{
		SentryAddress:           s.addr(),
		ControlPlaneTrustDomain: o.cpTrustDomain,
		ControlPlaneNamespace:   o.cpNamespace,
		TrustAnchors:            o.anchors,
		AppID:                   o.appID,
		MTLSEnabled:             true,
		Mode:                    modes.KubernetesMode,
		Healthz:                 healthz.New(),
	})
	if err != nil {
		t.Fatalf("security.New (Kubernetes mode, app %q): %v", o.appID, err)
	}
	return p
}

// runningProvider is a provider's Run in progress: done is closed when Run
// has returned, with err.
type runningProvider struct {
	done chan struct{}
	err  error
}

// runUntilReady runs p until the end of ctx (or until Run fails) and waits up
// to timeout for its handler, i.e. its first SVID. It returns the handler, or
// else the error Run returned (after cancelling ctx on a timeout: Dapr's
// client keeps dialling a Sentry it refuses until its context ends, and only
// then says why).
func runUntilReady(ctx context.Context, cancelRun context.CancelFunc, p security.Provider, timeout time.Duration) (security.Handler, *runningProvider, error) {
	rp := &runningProvider{done: make(chan struct{})}
	go func() {
		rp.err = p.Run(ctx)
		close(rp.done)
	}()
	hctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	type res struct {
		h   security.Handler
		err error
	}
	hch := make(chan res, 1)
	go func() {
		h, err := p.Handler(hctx)
		hch <- res{h, err}
	}()
	select {
	case <-rp.done:
		if rp.err == nil {
			return nil, rp, errors.New("security provider stopped without an error")
		}
		return nil, rp, rp.err
	case r := <-hch:
		if r.err != nil {
			cancelRun()
			select {
			case <-rp.done:
				if rp.err != nil {
					return nil, rp, fmt.Errorf("no SVID after %s: %w", timeout, rp.err)
				}
			case <-time.After(15 * time.Second):
			}
			return nil, rp, fmt.Errorf("no SVID after %s: %w", timeout, r.err)
		}
		return r.h, rp, nil
	}
}

// isTransient tells whether a client's failure is one a real daprd would get
// past by restarting (its pod restarts it): Sentry unreachable or slow, or a
// refusal that depends on timing (Dapr's sentry looks pods up in an informer
// cache that may not have a just-created pod yet). Refusals about the identity
// itself (app-id or namespace mismatch, a refused server ID) are definitive.
func isTransient(err error) bool {
	switch grpcCode(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Aborted, codes.Unknown:
		return !strings.Contains(err.Error(), "unexpected ID")
	case codes.PermissionDenied:
		m := err.Error()
		return strings.Contains(m, "validator not ready") ||
			strings.Contains(m, "failed to get pod of identity") ||
			strings.Contains(m, "token review failed")
	}
	return false
}

// runKubeClient runs a Kubernetes-mode Dapr client until it has an SVID, or
// fails definitively, or budget is spent; like a pod restarting daprd, a
// client that failed transiently is started again. On success the client
// runs until the cleanup of owner (t or one of its ancestors).
func runKubeClient(t, owner testing.TB, s *sentryProc, o kubeClientOpts, budget time.Duration) (security.Handler, error) {
	t.Helper()
	o.defaults()
	deadline := time.Now().Add(budget)
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithCancel(context.Background())
		var (
			h   security.Handler
			rp  *runningProvider
			err error
		)
		start := time.Now()
		withDaprdEnv(o.env(), func() {
			p := newKubeProvider(t, s, o)
			h, rp, err = runUntilReady(ctx, cancel, p, time.Until(deadline))
			if err != nil {
				// Let Run return while the environment is still this client's.
				cancel()
				select {
				case <-rp.done:
				case <-time.After(15 * time.Second):
					t.Errorf("security provider %q did not stop", o.appID)
				}
			}
		})
		if err == nil {
			owner.Cleanup(func() {
				cancel()
				select {
				case <-rp.done:
				case <-time.After(10 * time.Second):
					owner.Errorf("security provider %q did not stop", o.appID)
				}
			})
			t.Logf("client %q: SVID %s after %s (attempt %d)", o.appID, h.ID(), time.Since(start).Round(time.Millisecond), attempt)
			return h, nil
		}
		cancel()
		if !isTransient(err) || time.Until(deadline) < 3*time.Second {
			return nil, err
		}
		t.Logf("client %q attempt %d failed (%v); starting it again, as its pod would", o.appID, attempt, err)
		time.Sleep(2 * time.Second)
	}
}

// startKubeClient starts a Kubernetes-mode Dapr client that must obtain an
// SVID; it runs until the cleanup of owner (t or one of its ancestors).
func startKubeClient(t, owner testing.TB, s *sentryProc, o kubeClientOpts) *daprClient {
	t.Helper()
	h, err := runKubeClient(t, owner, s, o, kubeClientReadyTimeout)
	if err != nil {
		t.Fatalf("Dapr client in Kubernetes mode (app %q, NAMESPACE=%s, token %s) got no SVID: %v",
			o.appID, o.podNS, o.tokenFile, err)
	}
	return &daprClient{opts: clientOpts{appID: o.appID, ns: o.podNS}, handler: h}
}

// expectKubeClientRefused runs a Kubernetes-mode client that must not obtain
// an SVID within budget and returns the error its provider reported. A
// refusal by Sentry (PermissionDenied is not retried by Dapr's client) ends
// it at once; a refused server identity makes the client retry until the
// deadline.
func expectKubeClientRefused(t testing.TB, s *sentryProc, o kubeClientOpts, budget time.Duration) error {
	t.Helper()
	h, err := runKubeClient(t, t, s, o, budget)
	if err == nil {
		t.Fatalf("client %q (NAMESPACE=%s, token %s, control plane %s/%s) obtained identity %s, expected a refusal",
			o.appID, o.podNS, o.tokenFile, o.cpTrustDomain, o.cpNamespace, h.ID())
	}
	return err
}

// grpcCode is the gRPC status code wrapped somewhere in err (Unknown if none).
func grpcCode(err error) codes.Code {
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) {
		return se.GRPCStatus().Code()
	}
	return codes.Unknown
}

func writeTokenFile(t testing.TB, token string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(f, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// checkKubeSVID checks the SVID of a Kubernetes-mode client against the
// ConfigMap's anchors and the Secret's issuer; the leaf lives life
// (workloadCertTTL + allowedClockSkew of the daprsystem Configuration).
func checkKubeSVID(t testing.TB, c *daprClient, wantID string, anchors, issuerPEM []byte, cp string, life time.Duration) {
	t.Helper()
	if got := c.handler.ID().String(); got != wantID {
		t.Errorf("handler.ID() = %s, want %s", got, wantID)
	}
	sv := c.svid(t)
	if sv.ID.String() != wantID {
		t.Errorf("SVID ID = %s, want %s", sv.ID, wantID)
	}
	id, _, err := x509svid.Verify(sv.Certificates, bundleFor(t, "public", anchors))
	if err != nil {
		t.Fatalf("x509svid.Verify(client SVID) against the ConfigMap's ca.crt: %v", err)
	}
	if id.String() != wantID {
		t.Errorf("verified ID = %s, want %s", id, wantID)
	}
	leaf := sv.Certificates[0]
	checkSVIDLeaf(t, leaf)
	if _, ok := leaf.PublicKey.(ed25519.PublicKey); !ok {
		t.Errorf("leaf key is %T, want ed25519 (Dapr's default CSR key)", leaf.PublicKey)
	}
	if !publicKeyEqual(sv.PrivateKey.Public(), leaf.PublicKey) {
		t.Error("leaf public key is not the client's CSR key")
	}
	if len(leaf.DNSNames) != 0 {
		t.Errorf("workload leaf has DNS SANs %v, want none", leaf.DNSNames)
	}
	issuer := parsePEMCerts(t, issuerPEM)
	if len(sv.Certificates) < 2 || !sv.Certificates[1].Equal(issuer[0]) {
		t.Errorf("workload chain has %d certs; want the leaf followed by the Secret's issuer.crt", len(sv.Certificates))
	}
	for _, c := range sv.Certificates {
		if c.CheckSignatureFrom(c) == nil {
			t.Errorf("workload chain contains a self-signed certificate (%s); the root must not be sent", c.Subject)
		}
	}
	// The lifetime comes from the daprsystem Configuration read from the API.
	tol := max(life/50, 2*time.Second)
	if got := leaf.NotAfter.Sub(leaf.NotBefore); got < life-tol || got > life+tol {
		t.Errorf("leaf lifetime %s, want ~%s (workloadCertTTL + allowedClockSkew of Configuration %s/daprsystem)",
			got, life, cp)
	}
	got, err := c.handler.CurrentTrustAnchors(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !sameCerts(parsePEMCerts(t, got), parsePEMCerts(t, anchors)) {
		t.Error("client's CurrentTrustAnchors differ from the ConfigMap's ca.crt")
	}
}

// ---------------------------------------------------------------------------
// The test

// kubeDeployment is one way of installing Sentry in the cluster.
type kubeDeployment struct {
	name   string
	cp     string // control-plane namespace (Sentry's NAMESPACE); deliberately not dapr-system
	appsNS string // workload namespace
	// helmObjects: create the empty dapr-trust-bundle Secret and ConfigMap
	// the way Dapr's Helm chart installs them next to Sentry (neither sentry
	// creates them: the chart's RBAC has no create). Without it, the deploy/
	// install: the same empty objects from deploy/trust-bundle.yaml.
	helmObjects bool
	// serverIDCheck: also run a client that expects Sentry in another
	// namespace and must refuse it (costs clientFailTimeout).
	serverIDCheck bool
}

// TestKubernetesMode (issue #6): Dapr's client in Kubernetes mode gets its
// SVID from the Sentry under test in Kubernetes mode, through TokenReview of a
// pod-bound token and the pod's dapr.io/app-id; a token of another pod is
// refused; two such clients complete mutual TLS. One cluster, two
// deployments (see kubeDeployment), each in its own namespaces.
func TestKubernetesMode(t *testing.T) {
	// Dapr's client reads these; nothing from the outer environment may leak in
	// (t.Setenv also makes this test refuse t.Parallel, which withDaprdEnv relies on).
	for _, k := range []string{"NAMESPACE", securityconsts.SentryTokenFileEnvVar, "SENTRY_LOCAL_IDENTITY"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}

	k := startKubeCluster(t)
	k.apply(t, filepath.Join(k.repo, "deploy", "crds", "configuration.yaml"))

	for _, d := range []kubeDeployment{
		{name: "deploy-rbac", cp: "sentry-cp", appsNS: "apps-interop"},
		// The server-ID check here, so that it runs against Dapr's sentry too.
		{name: "helm-objects", cp: "sentry-helm", appsNS: "apps-helm", helmObjects: true, serverIDCheck: true},
	} {
		t.Run(d.name, func(t *testing.T) {
			testKubernetesDeployment(t, k, d)
		})
	}
}

// kubeSentryControlPlane sets up control-plane namespace cp (k.controlPlane)
// with its daprsystem Configuration (kubeWorkloadTTL, kubeClockSkew) and
// returns Sentry's kubeconfig.
func kubeSentryControlPlane(t testing.TB, k *kubeCluster, cp string) string {
	t.Helper()
	kubeconfig := k.controlPlane(t, cp)
	k.createConfiguration(t, cp, "daprsystem", map[string]any{"mtls": map[string]any{
		"enabled":          true,
		"workloadCertTTL":  kubeWorkloadTTL.String(),
		"allowedClockSkew": kubeClockSkew.String(),
	}})
	return kubeconfig
}

func testKubernetesDeployment(t *testing.T, k *kubeCluster, d kubeDeployment) {
	dt := t // the deployment's test: its clients and its Sentry live as long as it
	cp := d.cp
	kubeconfig := kubeSentryControlPlane(t, k, cp)
	if d.helmObjects {
		k.createHelmTrustBundle(t, cp)
	} else {
		k.applyDeployFile(t, cp, "trust-bundle.yaml")
	}
	s := startKubeSentry(t, kubeconfig, cp)
	sentryID := "spiffe://" + kubeTrustDomain + "/ns/" + cp + "/dapr-sentry"

	// Trust bundle: ConfigMap (public; what the injector hands daprd as
	// DAPR_TRUST_ANCHORS) and Secret (with the issuer) in the control-plane
	// namespace; both hold the same anchors.
	cm := k.configMapData(t, cp, "dapr-trust-bundle")
	anchors := []byte(cm["ca.crt"])
	if len(anchors) == 0 {
		t.Fatalf("ConfigMap %s/dapr-trust-bundle has no ca.crt (data keys: %v)", cp, keys(cm))
	}
	sec := k.secretData(t, cp, "dapr-trust-bundle")
	if len(sec["issuer.crt"]) == 0 || len(sec["ca.crt"]) == 0 {
		t.Fatalf("Secret %s/dapr-trust-bundle lacks ca.crt or issuer.crt (data keys: %v)", cp, keys(sec))
	}
	if !sameCerts(parsePEMCerts(t, sec["ca.crt"]), parsePEMCerts(t, anchors)) {
		t.Error("the Secret's ca.crt differs from the ConfigMap's")
	}

	// Sentry serves spiffe://cluster.local/ns/<cp>/dapr-sentry chained to the
	// ConfigMap's anchors: exactly what the clients below authorise.
	serving, _ := servingChain(t, s)
	verifyLeafChain(t, serving, anchors, kubeTrustDomain, sentryID)

	// Workloads: pods whose names differ from their app ids, so the
	// dapr.io/app-id annotation is what decides.
	ns := d.appsNS
	k.createNamespace(t, ns)
	type workload struct {
		appID, pod, sa string
		audience       string
		expiration     int
		tokenFile      string
	}
	workloads := []*workload{
		// The audience the task (and Sentry's legacy audience) names.
		{appID: "k8s-app-a", pod: "app-a-6d5f7", sa: "app-a", audience: "dapr.io/sentry", expiration: 600},
		// What the v1.18.3 injector projects into daprd: audience = Sentry's
		// SPIFFE ID, 7200 s.
		{appID: "k8s-app-b", pod: "app-b-8c4d2", sa: "app-b", audience: sentryID, expiration: 7200},
	}
	for _, w := range workloads {
		k.createServiceAccount(t, ns, w.sa)
		uid := k.createPod(t, ns, w.pod, w.sa, map[string]string{"dapr.io/app-id": w.appID})
		tok := k.tokenRequest(t, ns, w.sa, &boundPod{w.pod, uid}, []string{w.audience}, w.expiration)
		w.tokenFile = writeTokenFile(t, tok)
	}
	wa, wb := workloads[0], workloads[1]
	opts := func(w *workload) kubeClientOpts {
		return kubeClientOpts{appID: w.appID, podNS: ns, tokenFile: w.tokenFile, cpNamespace: cp, anchors: anchors}
	}

	var a, b *daprClient
	t.Run("svid/audience-dapr.io-sentry", func(t *testing.T) {
		a = startKubeClient(t, dt, s, opts(wa))
		checkKubeSVID(t, a, expectedWorkloadID(ns, wa.appID), anchors, sec["issuer.crt"], cp, kubeWorkloadTTL+kubeClockSkew)
	})
	t.Run("svid/audience-sentry-spiffe-id", func(t *testing.T) {
		b = startKubeClient(t, dt, s, opts(wb))
		checkKubeSVID(t, b, expectedWorkloadID(ns, wb.appID), anchors, sec["issuer.crt"], cp, kubeWorkloadTTL+kubeClockSkew)
	})

	t.Run("reject/token-of-another-pod", func(t *testing.T) {
		// app a presents pod b's (valid, bound) token.
		o := opts(wa)
		o.tokenFile = wb.tokenFile
		err := expectKubeClientRefused(t, s, o, 60*time.Second)
		t.Logf("client error (expected): %v", err)
		if c := grpcCode(err); c != codes.PermissionDenied {
			t.Errorf("want PermissionDenied from Sentry, got %v: %v", c, err)
		}
		want := fmt.Sprintf("app-id mismatch. expected: %s, received: %s", wb.appID, wa.appID)
		if !strings.Contains(err.Error(), want) {
			t.Errorf("want the refusal to say %q, got: %v", want, err)
		}
	})
	t.Run("reject/namespace-mismatch", func(t *testing.T) {
		// The right token, but the client runs as if in another namespace.
		o := opts(wa)
		o.podNS = "default"
		err := expectKubeClientRefused(t, s, o, 60*time.Second)
		t.Logf("client error (expected): %v", err)
		if c := grpcCode(err); c != codes.PermissionDenied {
			t.Errorf("want PermissionDenied from Sentry, got %v: %v", c, err)
		}
		if want := "namespace mismatch; received namespace: default"; !strings.Contains(err.Error(), want) {
			t.Errorf("want the refusal to say %q, got: %v", want, err)
		}
	})
	if d.serverIDCheck {
		t.Run("reject/wrong-control-plane-namespace", func(t *testing.T) {
			// A client that expects Sentry in dapr-system must refuse this
			// one's identity (and so never sends its token).
			o := opts(wa)
			o.cpNamespace = "dapr-system"
			err := expectKubeClientRefused(t, s, o, clientFailTimeout)
			t.Logf("client error (expected): %v", err)
			if m := err.Error(); !strings.Contains(m, "unexpected ID") || !strings.Contains(m, sentryID) {
				t.Errorf("want the failure to be the server-ID authorisation (unexpected ID %q), got: %v", sentryID, err)
			}
		})
	}

	t.Run("mtls", func(t *testing.T) {
		if a == nil || b == nil {
			t.Skip("a client has no SVID (see above)")
		}
		other := mustID(t, expectedWorkloadID(ns, "k8s-app-x"))
		t.Run("net/a->b", func(t *testing.T) { mustExchange(t, b, a) })
		t.Run("net/b->a", func(t *testing.T) { mustExchange(t, a, b) })
		t.Run("net/reject-unexpected-server", func(t *testing.T) {
			_, err := mtlsExchange(b, a, a.handler.ID(), other)
			if err == nil || !strings.Contains(err.Error(), "unexpected ID") {
				t.Fatalf("client accepted a server with an unexpected SPIFFE ID (err=%v)", err)
			}
		})
		t.Run("net/reject-unauthorised-client", func(t *testing.T) {
			// b accepts only k8s-app-x; a presents a valid SVID with another ID.
			_, err := mtlsExchange(b, a, other, b.handler.ID())
			if err == nil {
				t.Fatal("server accepted a client whose SPIFFE ID is not authorised")
			}
			t.Logf("rejected as expected: %v", err)
		})
		t.Run("grpc/a->b", func(t *testing.T) { grpcHealthOverMTLS(t, b, a, other) })
	})
}

// grpcHealthOverMTLS serves gRPC health with server's GRPCServerOptionMTLS and
// calls it with client's GRPCDialOptionMTLS(server's ID); a client expecting
// the ID other must refuse the server.
func grpcHealthOverMTLS(t *testing.T, server, client *daprClient, other spiffeid.ID) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(server.handler.GRPCServerOptionMTLS())
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go srv.Serve(lis)
	defer srv.Stop()

	call := func(expect spiffeid.ID) error {
		conn, err := grpc.NewClient(lis.Addr().String(), client.handler.GRPCDialOptionMTLS(expect))
		if err != nil {
			return err
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			return err
		}
		if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("health status %v", resp.GetStatus())
		}
		return nil
	}
	if err := call(server.handler.ID()); err != nil {
		t.Fatalf("gRPC over Dapr mTLS %s -> %s: %v", client.opts.appID, server.opts.appID, err)
	}
	if err := call(other); err == nil {
		t.Fatal("gRPC client accepted a server with an unexpected SPIFFE ID")
	}
}

// isDaprSentry tells whether bin is the same file as $DAPR_SENTRY_BIN.
func isDaprSentry(bin string) bool {
	if daprSentryBin == "" {
		return false
	}
	a, errA := os.Stat(bin)
	b, errB := os.Stat(daprSentryBin)
	return errA == nil && errB == nil && os.SameFile(a, b)
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
