package interop

// TestHelmChart (issue #12): Sentry as Dapr's Helm chart v1.18.3 runs it,
// nothing changed but the binary. See tests/helm/README.md for the steps.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	sentryv1pb "github.com/dapr/dapr/pkg/proto/sentry/v1"
)

const (
	// operatorIssuerDeadline: an issuer an operator puts into the Secret is
	// served within this long of the volume update.
	operatorIssuerDeadline = 5 * time.Second
	// idleWindow: Sentry's API requests are counted over this long with
	// nothing happening.
	idleWindow = 60 * time.Second
	// Before the window: at most idleSettleMax until idleSettleQuiet passed
	// without a request (Dapr's sentry reloads a few times, 2 s apart, after a
	// volume update).
	idleSettleQuiet = 5 * time.Second
	idleSettleMax   = 40 * time.Second
	// agreeDeadline: replicas started at once agree on one CA within this.
	agreeDeadline = 30 * time.Second
	// renewalDeadline / rotationDeadline bound the CLI-driven issuer renewal
	// and the phased root rotation (workloadCertTTL 10s + skew 1s of the
	// second render makes each phase wait ~11 s).
	renewalDeadline  = 20 * time.Second
	rotationDeadline = 150 * time.Second
	// kubeletBackoff / kubeletMaxRestarts: the kubelet's first crash back-off,
	// and how many restarts of one replica are played before it counts as a
	// crash loop.
	kubeletBackoff     = 10 * time.Second
	kubeletMaxRestarts = 3
)

// helmRender is one rendering of the chart and what is checked with it.
type helmRender struct {
	name   string
	values []string
	jwt    bool
	// life: workloadCertTTL + allowedClockSkew the values give.
	life time.Duration
}

var helmRenders = []helmRender{
	{name: "default", life: 24*time.Hour + 15*time.Minute},
	{
		name: "jwt-ha",
		// ha: the Deployment's three replicas; the short TTL bounds the phases of a
		// root rotation (their grace is workloadCertTTL + allowedClockSkew).
		values: []string{"dapr_sentry.jwt.enabled=true", "global.ha.enabled=true",
			"global.mtls.workloadCertTTL=10s", "global.mtls.allowedClockSkew=1s"},
		jwt:  true,
		life: 11 * time.Second,
	},
}

// helmSummary collects the audit counts of one binary for the final log.
type helmSummary struct {
	forbidden map[string]int // per render
	idle      int            // -1: not measured
}

func TestHelmChart(t *testing.T) {
	repo := repoRoot(t)
	chart := daprChartDir(t)
	renderer := buildRenderer(t, repo, t.TempDir())
	rendered := make([]*renderedChart, len(helmRenders))
	for i, r := range helmRenders {
		rendered[i] = renderChart(t, renderer, chart, r.values...)
	}
	type target struct {
		label, bin string
		ours       bool
	}
	targets := []target{{"SENTRY_BIN", sentryBin, !isDaprSentry(sentryBin)}}
	if targets[0].ours {
		targets = append(targets, target{"dapr", requireDaprSentry(t), false})
	}
	summary := map[string]*helmSummary{}
	for _, tg := range targets {
		sum := &helmSummary{forbidden: map[string]int{}, idle: -1}
		summary[tg.label] = sum
		t.Run(tg.label, func(t *testing.T) {
			t.Logf("binary %s", tg.bin)
			for i, r := range helmRenders {
				t.Run(r.name, func(t *testing.T) {
					h := setupHelm(t, rendered[i], r, tg.bin, tg.ours)
					defer func() { sum.forbidden[r.name] = h.checkNoForbidden(t) }()
					if r.name == "default" {
						h.singleReplica(t, sum)
					} else {
						h.replicas(t)
					}
				})
			}
		})
	}
	for _, tg := range targets {
		s := summary[tg.label]
		if len(s.forbidden) == 0 {
			continue // filtered out by -run
		}
		t.Logf("audit summary %s (%s): 403s %v; requests during %s idle: %d", tg.label, tg.bin, s.forbidden, idleWindow, s.idle)
	}
}

// helmCluster is one cluster with the chart's objects applied and Sentry's
// pods about to start.
type helmCluster struct {
	k        *kubeCluster
	r        helmRender
	c        chartSentry
	audit    string
	user     string
	bin      string // the pod's copy of the binary
	origBin  string
	ours     bool
	proj     *projector
	saDir    string
	sentryID string
}

func setupHelm(t *testing.T, rc *renderedChart, r helmRender, bin string, ours bool) *helmCluster {
	t.Helper()
	env, log := auditEnv(t, t.TempDir())
	k := startKubeCluster(t, env)
	k.createNamespace(t, helmNamespace) // helm install --create-namespace
	crds, rest := rc.sentryObjects(t)
	k.applyObjects(t, "chart-crds", crds)
	k.applyObjects(t, "chart-sentry", rest)
	c := rc.sentryDeployment(t)
	if !c.nonRoot {
		t.Errorf("the chart's sentry container is not runAsNonRoot")
	}
	t.Logf("chart %v: %s", r.values, c)
	return &helmCluster{
		k: k, r: r, c: c, audit: log,
		user:     serviceAccountUser(helmNamespace, c.sa),
		bin:      podBinary(t, bin),
		origBin:  bin,
		ours:     ours,
		proj:     startProjector(t, k, helmNamespace, "dapr-trust-bundle"),
		saDir:    serviceAccountVolume(t, k, helmNamespace, c.sa),
		sentryID: "spiffe://" + kubeTrustDomain + "/ns/" + helmNamespace + "/dapr-sentry",
	}
}

// pod starts replica i: replica 0 with exactly the chart's command line and
// ports (which must be free), the others on free ports (see withPorts).
func (h *helmCluster) pod(t *testing.T, i int) *sentryProc {
	t.Helper()
	ports := [3]int{h.c.grpcPort, h.c.healthzPort, h.c.metricsPort}
	if i == 0 {
		for _, p := range ports {
			l, err := net.Listen("tcp", fmt.Sprintf(":%d", p))
			if err != nil {
				t.Fatalf("the chart's port %d is in use on this machine (%v); the chart's exact command line needs it", p, err)
			}
			l.Close()
		}
	} else {
		free, err := freePorts(3)
		if err != nil {
			t.Fatal(err)
		}
		copy(ports[:], free)
	}
	return h.podOn(t, i, ports)
}

// podOn starts replica i's container on ports (a restart keeps its pod's).
func (h *helmCluster) podOn(t *testing.T, i int, ports [3]int) *sentryProc {
	t.Helper()
	argv := h.c.argv
	if i != 0 {
		argv = h.c.withPorts(ports[0], ports[1], ports[2])
	}
	vol := h.proj.volume(t, h.c.credMode)
	return startChartPod(t, h.k, h.c, fmt.Sprintf("dapr-sentry-%d", i), h.bin, argv, vol, h.saDir, ports)
}

// restartExited plays the kubelet's restartPolicy Always for replica i until
// it is healthy: Dapr's sentry exits when its Secret update loses the race
// between replicas (§8 of the behaviour reference) and Kubernetes restarts it
// after a back-off. Ours must never need this (an exit is an error); Dapr's
// restarts are counted and logged. A restarted container belongs to owner
// (the test the replicas live in), not to t.
func (h *helmCluster) restartExited(t, owner *testing.T, pods []*sentryProc, i int) (restarts int) {
	t.Helper()
	for {
		s := pods[i]
		err := s.waitHealthy(kubeSentryHealthyTimeout)
		if err == nil {
			return restarts
		}
		select {
		case <-s.exited:
		default:
			t.Errorf("%s: %v", s.name, err)
			return restarts
		}
		if h.ours || restarts >= kubeletMaxRestarts {
			t.Errorf("%s (restart %d): %v\n--- output ---\n%s", s.name, restarts, err, s.logs.String())
			return restarts
		}
		t.Logf("%s exited (%v); the kubelet restarts it after %s; its last lines:\n%s",
			s.name, s.err, kubeletBackoff, lastLines(s.logs.String(), 3))
		s.onStop() // seen and reported: not an error at clean-up
		time.Sleep(kubeletBackoff)
		pods[i] = h.podOn(owner, i, [3]int{s.port, s.healthzPort, s.metricsPort})
		restarts++
	}
}

// lastLines returns the last n lines of text.
func lastLines(text string, n int) string {
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// checkNoForbidden: no request of Sentry's user (server and CLI) was refused.
func (h *helmCluster) checkNoForbidden(t *testing.T) int {
	t.Helper()
	time.Sleep(time.Second) // the audit backend writes as requests complete
	evs := userRequests(t, h.audit, h.user)
	f := forbidden(evs)
	t.Logf("audit: %d requests by %s, %d answered 403; by verb and resource: %s", len(evs), h.user, len(f), verbSummary(evs))
	if len(f) > 0 {
		t.Errorf("%d requests by %s were refused (403) under the chart's RBAC:%s", len(f), h.user, listEvents(f, 20))
	}
	return len(f)
}

// checkBundle: the Secret and ConfigMap hold what Dapr's sentry writes into
// them (Secret ca.crt, issuer.crt, issuer.key, + jwt.key and jwks.json with
// JWT; ConfigMap ca.crt, + jwks.json: the Secret's bytes). The Secret may
// hold further keys of ours (reported), the ConfigMap no others.
func (h *helmCluster) checkBundle(t *testing.T) (anchors []byte, sec map[string][]byte) {
	t.Helper()
	wantSec := []string{"ca.crt", "issuer.crt", "issuer.key"}
	wantCM := []string{"ca.crt"}
	if h.r.jwt {
		wantSec = append(wantSec, "jwks.json", "jwt.key")
		wantCM = append(wantCM, "jwks.json")
	}
	var cm map[string]string
	deadline := time.Now().Add(30 * time.Second)
	for {
		sec = h.k.secretData(t, helmNamespace, "dapr-trust-bundle")
		cm = h.k.configMapData(t, helmNamespace, "dapr-trust-bundle")
		missing := 0
		for _, k := range wantSec {
			if len(sec[k]) == 0 {
				missing++
			}
		}
		for _, k := range wantCM {
			if cm[k] == "" {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dapr-trust-bundle not filled: Secret keys %v (want %v), ConfigMap keys %v (want %v)",
				sortedKeys(sec), wantSec, sortedKeys(cm), wantCM)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if got := sortedKeys(cm); strings.Join(got, ",") != strings.Join(wantCM, ",") {
		t.Errorf("ConfigMap dapr-trust-bundle keys %v, want exactly %v", got, wantCM)
	}
	var extra []string
	for _, k := range sortedKeys(sec) {
		if !strings.Contains(","+strings.Join(wantSec, ",")+",", ","+k+",") {
			extra = append(extra, k)
		}
	}
	if len(extra) > 0 {
		if !h.ours {
			t.Errorf("Dapr's sentry wrote Secret keys %v beyond %v", extra, wantSec)
		}
		t.Logf("Secret dapr-trust-bundle also holds %v", extra)
	}
	for _, k := range wantCM {
		if cm[k] != string(sec[k]) {
			t.Errorf("ConfigMap %s differs from the Secret's", k)
		}
	}
	if _, err := tls.X509KeyPair(sec["issuer.crt"], sec["issuer.key"]); err != nil {
		t.Errorf("Secret issuer.key does not match issuer.crt: %v", err)
	}
	checkIssuerChains(t, sec["issuer.crt"], sec["ca.crt"])
	return sec["ca.crt"], sec
}

func checkIssuerChains(t testing.TB, issuerPEM, anchors []byte) {
	t.Helper()
	pool := x509.NewCertPool()
	for _, c := range parsePEMCerts(t, anchors) {
		pool.AddCert(c)
	}
	iss := parsePEMCerts(t, issuerPEM)
	if _, err := iss[0].Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("Secret issuer.crt does not chain to ca.crt: %v", err)
	}
}

// podWorkload is a pod with the dapr annotations and a token bound to it.
type podWorkload struct {
	appID, ns, token, tokenFile string
}

// workloads creates two pods in namespace apps, as the injector would see
// them, each with a pod-bound token: one for audience dapr.io/sentry (600
// s), one for Sentry's SPIFFE ID (7200 s; what the v1.18.3 injector projects).
func (h *helmCluster) workloads(t *testing.T) []podWorkload {
	t.Helper()
	const ns = "apps"
	h.k.createNamespace(t, ns)
	var out []podWorkload
	for _, w := range []struct {
		app, pod, aud string
		exp           int
	}{
		{"helm-app-a", "app-a-7f9c4", "dapr.io/sentry", 600},
		{"helm-app-b", "app-b-5b2d8", h.sentryID, 7200},
	} {
		h.k.createServiceAccount(t, ns, w.app)
		uid := h.k.createPod(t, ns, w.pod, w.app, map[string]string{"dapr.io/enabled": "true", "dapr.io/app-id": w.app})
		tok := h.k.tokenRequest(t, ns, w.app, &boundPod{w.pod, uid}, []string{w.aud}, w.exp)
		out = append(out, podWorkload{appID: w.app, ns: ns, token: tok, tokenFile: writeTokenFile(t, tok)})
	}
	return out
}

// daprClients: Dapr's client (pkg/security, as daprd in a pod) gets an SVID
// from s for each workload, chained to the ConfigMap's ca.crt through the
// Secret's issuer.
func (h *helmCluster) daprClients(t *testing.T, s *sentryProc, ws []podWorkload, anchors, issuer []byte) {
	t.Helper()
	for _, w := range ws {
		c := startKubeClient(t, t, s, kubeClientOpts{appID: w.appID, podNS: w.ns, tokenFile: w.tokenFile,
			cpNamespace: helmNamespace, anchors: anchors})
		checkKubeSVID(t, c, expectedWorkloadID(w.ns, w.appID), anchors, issuer, helmNamespace, h.r.life)
	}
}

// trySign asks s once, over ca, for a certificate for w (KUBERNETES
// validator, its pod-bound token) and returns the chain.
func trySign(t *testing.T, ca sentryv1pb.CAClient, w podWorkload) ([]*x509.Certificate, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := ca.SignCertificate(ctx, &sentryv1pb.SignCertificateRequest{
		Id: w.appID, Namespace: w.ns, Token: w.token,
		CertificateSigningRequest: newCSR(t, genKey(t, keyEd25519)),
		TokenValidator:            sentryv1pb.SignCertificateRequest_KUBERNETES,
	})
	if err != nil {
		return nil, err
	}
	return parsePEMCerts(t, resp.GetWorkloadCertificate()), nil
}

// servesIssuer is nil when s, authenticated against anchors (a fresh TLS
// connection), signs for w with issuer want.
func (h *helmCluster) servesIssuer(t *testing.T, s *sentryProc, w podWorkload, anchors []byte, want *x509.Certificate) error {
	t.Helper()
	chain, err := trySign(t, dialCAAs(t, s, anchors, kubeTrustDomain, mustID(t, h.sentryID)), w)
	if err != nil {
		return err
	}
	if len(chain) < 2 || !chain[1].Equal(want) {
		return fmt.Errorf("leaf issued by %s (serial %s)", chain[len(chain)-1].Subject, chain[len(chain)-1].SerialNumber)
	}
	return nil
}

// waitServes waits until s serves issuer want (see servesIssuer) and returns
// how long that took.
func (h *helmCluster) waitServes(t *testing.T, s *sentryProc, w podWorkload, anchors []byte, want *x509.Certificate, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		running(t, s)
		err := h.servesIssuer(t, s, w, anchors, want)
		if err == nil {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			t.Fatalf("%s did not serve the issuer %s (serial %s) within %s; last: %v", s.name, want.Subject, want.SerialNumber, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// putBundleData replaces keys of the Secret or ConfigMap dapr-trust-bundle
// (kind "secrets" or "configmaps"; as the admin, the way an operator's helm
// or kubectl would) and returns the new resourceVersion.
func (h *helmCluster) putBundleData(t *testing.T, kind string, set map[string]any) string {
	t.Helper()
	path := "/api/v1/namespaces/" + helmNamespace + "/" + kind + "/dapr-trust-bundle"
	var obj map[string]any
	h.k.mustCall(t, http.MethodGet, path, nil, &obj, false)
	data, _ := obj["data"].(map[string]any)
	if data == nil {
		data = map[string]any{}
	}
	for k, v := range set {
		data[k] = v // a Secret's []byte marshals as base64
	}
	obj["data"] = data
	var out struct {
		Metadata struct {
			ResourceVersion string `json:"resourceVersion"`
		} `json:"metadata"`
	}
	h.k.mustCall(t, http.MethodPut, path, obj, &out, false)
	return out.Metadata.ResourceVersion
}

// singleReplica: the default render (one replica): healthy, bundle, pods'
// certificates, an operator-supplied issuer within 5 s, then 60 s idle.
func (h *helmCluster) singleReplica(t *testing.T, sum *helmSummary) {
	if h.c.replicas != 1 {
		t.Fatalf("default values render %d replicas, want 1", h.c.replicas)
	}
	s := h.pod(t, 0)
	if !t.Run("healthy", func(t *testing.T) {
		if err := s.waitHealthy(kubeSentryHealthyTimeout); err != nil {
			t.Fatal(err) // the output is logged at cleanup
		}
	}) {
		return
	}
	var anchors []byte
	var sec map[string][]byte
	if !t.Run("bundle", func(t *testing.T) { anchors, sec = h.checkBundle(t) }) {
		return
	}
	ws := h.workloads(t)
	t.Run("pod-certificates", func(t *testing.T) { h.daprClients(t, s, ws, anchors, sec["issuer.crt"]) })

	t.Run("operator-issuer", func(t *testing.T) {
		// A new root and issuer from the operator, as `helm upgrade` with the
		// chart's dapr_sentry.tls values (what `dapr mtls renew-certificate`
		// runs) writes them: the Secret's three keys, then the ConfigMap's
		// ca.crt. The old root stays in ca.crt so that running workloads keep
		// verifying.
		op := newTestCA(t, keyEd25519, kubeTrustDomain)
		bundle := append(append([]byte{}, op.rootPEM...), anchors...)
		rv := h.putBundleData(t, "secrets", map[string]any{"ca.crt": bundle, "issuer.crt": op.issuerPEM, "issuer.key": op.issuerKeyPEM})
		h.putBundleData(t, "configmaps", map[string]any{"ca.crt": string(bundle)})
		at := h.proj.projected(t, rv, 10*time.Second)
		took := h.waitServes(t, s, ws[0], bundle, op.issuer, operatorIssuerDeadline+10*time.Second)
		since := time.Since(at)
		t.Logf("operator issuer served %s after the volume update (%s after the first request)", since.Round(10*time.Millisecond), took.Round(10*time.Millisecond))
		if since > operatorIssuerDeadline {
			t.Errorf("operator issuer served %s after the volume update, want ≤ %s", since.Round(10*time.Millisecond), operatorIssuerDeadline)
		}
	})

	t.Run("idle", func(t *testing.T) {
		running(t, s)
		h.settle(t)
		from := time.Now()
		time.Sleep(idleWindow)
		to := time.Now()
		running(t, s)
		time.Sleep(time.Second)
		idle := receivedIn(userRequests(t, h.audit, h.user), from, to)
		sum.idle = len(idle)
		t.Logf("%d requests by %s during %s idle", len(idle), h.user, idleWindow)
		if len(idle) > 0 {
			t.Errorf("Sentry made %d API requests during %s idle, want 0:%s", len(idle), idleWindow, listEvents(idle, 20))
		}
	})
}

// settle waits (up to idleSettleMax) until Sentry's user has sent nothing
// for idleSettleQuiet: the previous step's reloads are over.
func (h *helmCluster) settle(t *testing.T) {
	t.Helper()
	start := time.Now()
	for time.Since(start) < idleSettleMax {
		evs := userRequests(t, h.audit, h.user)
		if len(evs) == 0 || time.Since(evs[len(evs)-1].Received) >= idleSettleQuiet {
			t.Logf("quiet after %s", time.Since(start).Round(100*time.Millisecond))
			return
		}
		time.Sleep(time.Second)
	}
	t.Logf("not quiet after %s; measuring anyway", idleSettleMax)
}

// replicas: the jwt + ha render: the Deployment's replicas start at once on
// the empty bundle and agree on one CA; with our binary, an issuer renewal
// and a phased root rotation by `sentry ca renew` with the ServiceAccount's
// token complete and every replica follows.
func (h *helmCluster) replicas(t *testing.T) {
	if h.c.replicas < 3 {
		t.Fatalf("global.ha.enabled renders %d replicas, want 3", h.c.replicas)
	}
	pods := make([]*sentryProc, h.c.replicas)
	for i := range pods {
		pods[i] = h.pod(t, i)
	}
	owner := t
	if !t.Run("healthy", func(t *testing.T) {
		restarts := 0
		for i := range pods {
			restarts += h.restartExited(t, owner, pods, i)
		}
		t.Logf("%d replicas healthy after %d container restarts", len(pods), restarts)
	}) {
		return
	}
	var anchors []byte
	var sec map[string][]byte
	ws := h.workloads(t)
	var issuer *x509.Certificate
	if !t.Run("one-ca", func(t *testing.T) {
		// Every replica's serving certificate chains to the ConfigMap's ca.crt
		// (the TLS handshake checks it) and it signs with the Secret's issuer.
		start := time.Now()
		for {
			sec = h.k.secretData(t, helmNamespace, "dapr-trust-bundle")
			anchors = []byte(h.k.configMapData(t, helmNamespace, "dapr-trust-bundle")["ca.crt"])
			var errs []string
			if len(sec["issuer.crt"]) == 0 || len(anchors) == 0 {
				errs, issuer = append(errs, "dapr-trust-bundle not filled yet"), nil
			} else {
				issuer = parsePEMCerts(t, sec["issuer.crt"])[0]
			}
			for _, s := range pods {
				if issuer == nil {
					break
				}
				running(t, s)
				if err := h.servesIssuer(t, s, ws[0], anchors, issuer); err != nil {
					errs = append(errs, s.name+": "+err.Error())
				}
			}
			if len(errs) == 0 {
				t.Logf("%d replicas agree on one CA %s after the first check", len(pods), time.Since(start).Round(100*time.Millisecond))
				return
			}
			if time.Since(start) > agreeDeadline {
				t.Fatalf("replicas disagree after %s:\n  %s", agreeDeadline, strings.Join(errs, "\n  "))
			}
			time.Sleep(500 * time.Millisecond)
		}
	}) {
		return
	}
	if !t.Run("bundle", func(t *testing.T) { anchors, sec = h.checkBundle(t) }) {
		return
	}
	t.Run("pod-certificates", func(t *testing.T) { h.daprClients(t, pods[0], ws, anchors, sec["issuer.crt"]) })
	if !h.ours {
		t.Logf("Dapr's sentry has no `ca renew`: renewal and rotation are ours only")
		return
	}
	kubeconfig := h.k.serviceAccountKubeconfig(t, helmNamespace, h.c.sa)
	cli := func(t *testing.T, extra ...string) {
		args := append([]string{"ca", "renew", "--mode", "kubernetes", "--kubeconfig", kubeconfig,
			"--namespace", helmNamespace, "--trust-domain", kubeTrustDomain}, extra...)
		out, err := exec.Command(h.origBin, args...).CombinedOutput()
		t.Logf("sentry %s:\n%s", strings.Join(args, " "), out)
		if err != nil {
			t.Fatalf("sentry ca renew %v: %v", extra, err)
		}
	}
	t.Run("issuer-renewal", func(t *testing.T) {
		cli(t)
		now := h.k.secretData(t, helmNamespace, "dapr-trust-bundle")
		if string(now["ca.crt"]) != string(anchors) {
			t.Errorf("issuer renewal changed ca.crt")
		}
		renewed := parsePEMCerts(t, now["issuer.crt"])[0]
		if renewed.Equal(issuer) {
			t.Fatalf("issuer renewal left issuer.crt unchanged")
		}
		checkIssuerChains(t, now["issuer.crt"], anchors)
		for _, s := range pods {
			took := h.waitServes(t, s, ws[0], anchors, renewed, renewalDeadline)
			t.Logf("%s serves the renewed issuer after %s", s.name, took.Round(10*time.Millisecond))
		}
	})
	t.Run("root-rotation", func(t *testing.T) {
		old := h.k.secretData(t, helmNamespace, "dapr-trust-bundle")
		oldRoot := parsePEMCerts(t, old["ca.crt"])
		cli(t, "--root")
		start := time.Now()
		published := false
		for {
			cm := h.k.configMapData(t, helmNamespace, "dapr-trust-bundle")
			sec := h.k.secretData(t, helmNamespace, "dapr-trust-bundle")
			roots := parsePEMCerts(t, []byte(cm["ca.crt"]))
			if len(roots) > len(oldRoot) {
				published = true
			}
			if len(roots) == 1 && !roots[0].Equal(oldRoot[0]) && cm["ca.crt"] == string(sec["ca.crt"]) {
				if !published {
					t.Errorf("the new root replaced the old one without being published next to it first")
				}
				checkIssuerChains(t, sec["issuer.crt"], sec["ca.crt"])
				iss := parsePEMCerts(t, sec["issuer.crt"])[0]
				for _, s := range pods {
					h.waitServes(t, s, ws[0], sec["ca.crt"], iss, renewalDeadline)
				}
				t.Logf("root rotation complete after %s", time.Since(start).Round(100*time.Millisecond))
				return
			}
			for _, s := range pods {
				running(t, s)
			}
			if time.Since(start) > rotationDeadline {
				t.Fatalf("root rotation not complete after %s: ConfigMap ca.crt holds %d roots (published seen: %v)", rotationDeadline, len(roots), published)
			}
			time.Sleep(500 * time.Millisecond)
		}
	})
}
