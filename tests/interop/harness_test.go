// Package interop is a black-box interoperability suite for a Dapr Sentry
// implementation. It starts the binary named by $SENTRY_BIN in standalone
// mode, talks to it with Dapr's own client code (github.com/dapr/dapr/pkg/security)
// and with the generated gRPC stubs, and checks the certificates it issues with
// go-spiffe and zlint. Bundle-compatibility tests also need $DAPR_SENTRY_BIN
// (Dapr's real sentry, built by bench/peer/build).
//
// Run with tests/interop/run, or:
//
//	SENTRY_BIN=/abs/path/sentry DAPR_SENTRY_BIN=/abs/path/dapr-sentry go test -count=1 -v ./...
package interop

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	sentryv1pb "github.com/dapr/dapr/pkg/proto/sentry/v1"
)

const (
	// Values every Sentry under test is started with.
	sentryNamespace   = "dapr-system" // env NAMESPACE
	sentryTrustDomain = "localhost"   // --trust-domain

	healthyTimeout = 60 * time.Second
	stopTimeout    = 15 * time.Second
)

var (
	sentryBin     string // $SENTRY_BIN: implementation under test
	daprSentryBin string // $DAPR_SENTRY_BIN: Dapr's sentry (bundle-compat peer)

	// genBundleDir holds a bundle generated once by $SENTRY_BIN (started on an
	// empty directory in TestMain). Most tests start Sentry on a copy of it, so
	// that they do not race with the reloads Dapr's sentry performs right after
	// it wrote a freshly generated bundle (its file watcher sees its own writes).
	genBundleDir string
)

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	// Dapr client code reads these; make sure the test environment cannot
	// change what the clients send.
	for _, k := range []string{"SENTRY_LOCAL_IDENTITY", "DAPR_SENTRY_TOKEN_FILE", "DAPR_TRUST_ANCHORS"} {
		os.Unsetenv(k)
	}

	var err error
	sentryBin, err = resolveBin("SENTRY_BIN", true)
	if err != nil {
		fmt.Fprintf(os.Stderr, "\nINTEROP SETUP ERROR: %v\n"+
			"Set SENTRY_BIN to the sentry binary under test, e.g.\n"+
			"  SENTRY_BIN=$PWD/target/release/sentry   (ours)\n"+
			"  SENTRY_BIN=$PWD/target/dapr/sentry      (Dapr's, built by bench/peer/build)\n"+
			"or use tests/interop/run.\n\n", err)
		return 1
	}
	daprSentryBin, err = resolveBin("DAPR_SENTRY_BIN", false)
	if err != nil {
		fmt.Fprintf(os.Stderr, "\nINTEROP SETUP ERROR: %v\n\n", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "interop: SENTRY_BIN=%s\ninterop: DAPR_SENTRY_BIN=%s\n", sentryBin, daprSentryBin)

	tmp, err := os.MkdirTemp("", "interop-genbundle-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)
	genBundleDir = filepath.Join(tmp, "creds")
	if err := generateBundle(sentryBin, genBundleDir); err != nil {
		fmt.Fprintf(os.Stderr, "\nINTEROP SETUP ERROR: %s could not generate a bundle on an empty directory: %v\n\n", sentryBin, err)
		return 1
	}
	return m.Run()
}

// resolveBin returns the absolute path of the binary named by env var name.
// Relative paths are tried against the working directory (the package dir
// under `go test`) and then against the repository root.
func resolveBin(name string, required bool) (string, error) {
	v := os.Getenv(name)
	if v == "" {
		if required {
			return "", fmt.Errorf("%s is not set", name)
		}
		return "", nil
	}
	cands := []string{v}
	if !filepath.IsAbs(v) {
		if wd, err := os.Getwd(); err == nil {
			cands = []string{filepath.Join(wd, v), filepath.Join(wd, "..", "..", v)}
		}
	}
	for _, c := range cands {
		if st, err := os.Stat(c); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return filepath.Clean(c), nil
		}
	}
	return "", fmt.Errorf("%s=%q: no executable file at %v", name, v, cands)
}

func requireDaprSentry(t testing.TB) string {
	t.Helper()
	if daprSentryBin == "" {
		t.Fatal("DAPR_SENTRY_BIN is not set: the bundle-compatibility tests need Dapr's sentry " +
			"(build it with bench/peer/build; it lands in target/dapr/sentry)")
	}
	return daprSentryBin
}

// ---------------------------------------------------------------------------
// Sentry process management

type sentryOpts struct {
	bin string // default sentryBin
	// dir is the --issuer-credentials directory. "" = a fresh copy of genBundleDir.
	dir              string
	workloadCertTTL  string // default 24h
	allowedClockSkew string // default 15m
	extraArgs        []string
}

type sentryProc struct {
	name        string
	bin         string
	dir         string
	namespace   string // env NAMESPACE it runs with
	configPath  string
	port        int
	healthzPort int
	metricsPort int

	cmd    *exec.Cmd
	logs   *syncBuffer
	exited chan struct{}
	err    error  // Wait() result, valid once exited is closed
	onStop func() // set by startSentry: marks the process as stopped by the test
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// freePorts reserves n distinct free TCP ports (all held open at once, then
// released).
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func writeConfig(path, ttl, skew string) error {
	cfg := fmt.Sprintf(`apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: daprsystem
spec:
  mtls:
    enabled: true
    workloadCertTTL: "%s"
    allowedClockSkew: "%s"
`, ttl, skew)
	return os.WriteFile(path, []byte(cfg), 0o644)
}

// launchSentry starts a Sentry process and waits until /healthz is 200.
// workDir receives the config file; o.dir must exist.
func launchSentry(o sentryOpts, workDir string) (*sentryProc, error) {
	if o.workloadCertTTL == "" {
		o.workloadCertTTL = "24h"
	}
	if o.allowedClockSkew == "" {
		o.allowedClockSkew = "15m"
	}
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	s := &sentryProc{
		name:        filepath.Base(o.bin),
		bin:         o.bin,
		dir:         o.dir,
		namespace:   sentryNamespace,
		configPath:  filepath.Join(workDir, "sentry-config.yaml"),
		port:        ports[0],
		healthzPort: ports[1],
		metricsPort: ports[2],
		logs:        &syncBuffer{},
		exited:      make(chan struct{}),
	}
	if err := writeConfig(s.configPath, o.workloadCertTTL, o.allowedClockSkew); err != nil {
		return nil, err
	}
	s.cmd = exec.Command(o.bin,
		"--issuer-credentials", s.dir,
		"--port", strconv.Itoa(s.port),
		"--healthz-port", strconv.Itoa(s.healthzPort),
		"--metrics-port", strconv.Itoa(s.metricsPort),
		"--trust-domain", sentryTrustDomain,
		"--config", s.configPath,
	)
	s.cmd.Args = append(s.cmd.Args, o.extraArgs...)
	s.cmd.Env = append(os.Environ(), "NAMESPACE="+s.namespace)
	s.cmd.Stdout = s.logs
	s.cmd.Stderr = s.logs
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", o.bin, err)
	}
	if err := s.waitHealthy(healthyTimeout); err != nil {
		s.kill()
		return nil, fmt.Errorf("%w\n--- %s output ---\n%s", err, s.name, s.logs.String())
	}
	return s, nil
}

// start starts s.cmd; s.exited is closed (with s.err) when it ends.
func (s *sentryProc) start() error {
	if err := s.cmd.Start(); err != nil {
		return err
	}
	go func() {
		s.err = s.cmd.Wait()
		close(s.exited)
	}()
	return nil
}

func (s *sentryProc) args() string { return strings.Join(s.cmd.Args, " ") }

func (s *sentryProc) waitHealthy(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: 2 * time.Second}
	url := fmt.Sprintf("http://127.0.0.1:%d/healthz", s.healthzPort)
	last := "no response"
	for time.Now().Before(deadline) {
		select {
		case <-s.exited:
			return fmt.Errorf("sentry exited before becoming healthy (%v); cmd: NAMESPACE=%s %s", s.err, s.namespace, s.args())
		default:
		}
		resp, err := client.Get(url)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				// Contract: healthz 200 means the CA gRPC port is serving.
				c, derr := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", s.port), 2*time.Second)
				if derr != nil {
					return fmt.Errorf("GET /healthz returned 200 but the gRPC port %d does not accept connections: %v", s.port, derr)
				}
				c.Close()
				return nil
			}
			last = fmt.Sprintf("status %d", resp.StatusCode)
		} else {
			last = err.Error()
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("sentry not healthy after %s (last: %s); cmd: NAMESPACE=%s %s", timeout, last, s.namespace, s.args())
}

func (s *sentryProc) kill() {
	_ = s.cmd.Process.Kill()
	<-s.exited
}

// stop sends SIGTERM and expects a clean (exit 0) shutdown within stopTimeout.
func (s *sentryProc) stop() error {
	select {
	case <-s.exited:
		return fmt.Errorf("sentry had already exited: %v", s.err)
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
		if s.err != nil {
			return fmt.Errorf("sentry did not exit cleanly on SIGTERM: %v", s.err)
		}
		return nil
	case <-time.After(stopTimeout):
		s.kill()
		return fmt.Errorf("sentry did not exit within %s of SIGTERM (killed)", stopTimeout)
	}
}

// startSentry starts a Sentry for one test; it is stopped (and its output
// logged on failure) at test cleanup.
func startSentry(t testing.TB, o sentryOpts) *sentryProc {
	t.Helper()
	if o.bin == "" {
		o.bin = sentryBin
	}
	workDir := t.TempDir()
	if o.dir == "" {
		o.dir = filepath.Join(workDir, "creds")
		copyDir(t, genBundleDir, o.dir)
	}
	s, err := launchSentry(o, workDir)
	if err != nil {
		t.Fatalf("starting sentry: %v", err)
	}
	t.Logf("started %s: grpc=%d healthz=%d metrics=%d dir=%s ttl=%s skew=%s",
		s.bin, s.port, s.healthzPort, s.metricsPort, s.dir, o.workloadCertTTL, o.allowedClockSkew)
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			if err := s.stop(); err != nil {
				t.Errorf("%s: %v", s.bin, err)
			}
		}
		if t.Failed() || os.Getenv("INTEROP_SHOW_LOGS") != "" {
			t.Logf("--- output of %s ---\n%s", s.args(), s.logs.String())
		}
	})
	s.onStop = func() { stopped = true }
	return s
}

// stopNow stops a Sentry started by startSentry before test cleanup.
func (s *sentryProc) stopNow(t testing.TB) {
	t.Helper()
	if s.onStop != nil {
		s.onStop()
	}
	if err := s.stop(); err != nil {
		t.Errorf("%s: %v", s.bin, err)
	}
}

// generateBundle starts bin on an empty directory, waits until healthy and
// the three bundle files exist, then stops it.
func generateBundle(bin, dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	s, err := launchSentry(sentryOpts{bin: bin, dir: dir}, filepath.Dir(dir))
	if err != nil {
		return err
	}
	for _, f := range []string{"ca.crt", "issuer.crt", "issuer.key"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			s.kill()
			return fmt.Errorf("sentry is healthy but %s was not written: %v\n--- output ---\n%s", f, err, s.logs.String())
		}
	}
	if err := s.stop(); err != nil {
		return fmt.Errorf("%v\n--- output ---\n%s", err, s.logs.String())
	}
	return nil
}

func copyDir(t testing.TB, src, dst string) {
	t.Helper()
	if err := os.MkdirAll(dst, 0o700); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func (s *sentryProc) addr() string { return fmt.Sprintf("127.0.0.1:%d", s.port) }

func (s *sentryProc) readFile(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// anchorsPEM returns DIR/ca.crt — the trust anchors clients are given.
func (s *sentryProc) anchorsPEM(t testing.TB) []byte { return s.readFile(t, "ca.crt") }

// ---------------------------------------------------------------------------
// SPIFFE / X.509 helpers

func mustTD(t testing.TB, td string) spiffeid.TrustDomain {
	t.Helper()
	v, err := spiffeid.TrustDomainFromString(td)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func mustID(t testing.TB, s string) spiffeid.ID {
	t.Helper()
	v, err := spiffeid.FromString(s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func sentrySPIFFEID(t testing.TB) spiffeid.ID {
	return mustID(t, "spiffe://"+sentryTrustDomain+"/ns/"+sentryNamespace+"/dapr-sentry")
}

// bundleFor builds the go-spiffe X.509 bundle of trust domain td from PEM
// trust anchors (Dapr uses one set of anchors for every trust domain).
func bundleFor(t testing.TB, td string, anchorsPEM []byte) *x509bundle.Bundle {
	t.Helper()
	b, err := x509bundle.Parse(mustTD(t, td), anchorsPEM)
	if err != nil {
		t.Fatalf("parse trust anchors as X.509 bundle: %v", err)
	}
	return b
}

func parsePEMCerts(t testing.TB, b []byte) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			t.Fatalf("unexpected PEM block type %q in certificate PEM", blk.Type)
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatalf("parse certificate: %v", err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		t.Fatal("no certificate in PEM data")
	}
	return out
}

func sameCerts(a, b []*x509.Certificate) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].Equal(b[i]) {
			return false
		}
	}
	return true
}

type keyKind string

const (
	keyEd25519 keyKind = "ed25519"
	keyP256    keyKind = "ecdsa-p256"
	keyRSA2048 keyKind = "rsa-2048"
)

func genKey(t testing.TB, k keyKind) crypto.Signer {
	t.Helper()
	var (
		key crypto.Signer
		err error
	)
	switch k {
	case keyEd25519:
		_, key, err = ed25519.GenerateKey(rand.Reader)
	case keyP256:
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case keyRSA2048:
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	default:
		err = fmt.Errorf("unknown key kind %q", k)
	}
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// newCSR returns a PEM "CERTIFICATE REQUEST" with an empty subject, as
// dapr/kit's SPIFFE client builds it.
func newCSR(t testing.TB, key crypto.Signer) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

// ---------------------------------------------------------------------------
// Raw gRPC client (generated stubs from github.com/dapr/dapr/pkg/proto/sentry/v1)

// dialCA connects to the Sentry gRPC port the way Dapr's client does: TLS
// (no client certificate), chain verified against anchorsPEM, server
// authorised as spiffe://localhost/ns/dapr-system/dapr-sentry.
func dialCA(t testing.TB, s *sentryProc, anchorsPEM []byte) sentryv1pb.CAClient {
	t.Helper()
	return dialCAAs(t, s, anchorsPEM, sentryTrustDomain, sentrySPIFFEID(t))
}

// dialCAAs is dialCA for a Sentry with another control-plane trust domain
// (td, the anchors' trust domain) and SPIFFE ID.
func dialCAAs(t testing.TB, s *sentryProc, anchorsPEM []byte, td string, id spiffeid.ID) sentryv1pb.CAClient {
	t.Helper()
	tlsCfg := tlsconfig.TLSClientConfig(bundleFor(t, td, anchorsPEM), tlsconfig.AuthorizeID(id))
	conn, err := grpc.NewClient(s.addr(), grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return sentryv1pb.NewCAClient(conn)
}

type signResult struct {
	resp    *sentryv1pb.SignCertificateResponse
	chain   []*x509.Certificate // workload_certificate: leaf first
	anchors []*x509.Certificate // trust_chain_certificates[0]
}

func signInsecure(t testing.TB, ca sentryv1pb.CAClient, key crypto.Signer, id, ns, td string) signResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := ca.SignCertificate(ctx, &sentryv1pb.SignCertificateRequest{
		Id:                        id,
		Namespace:                 ns,
		TrustDomain:               td,
		CertificateSigningRequest: newCSR(t, key),
		TokenValidator:            sentryv1pb.SignCertificateRequest_INSECURE,
	})
	if err != nil {
		t.Fatalf("SignCertificate(id=%q ns=%q td=%q): %v", id, ns, td, err)
	}
	res := signResult{resp: resp, chain: parsePEMCerts(t, resp.GetWorkloadCertificate())}
	if n := len(resp.GetTrustChainCertificates()); n != 1 {
		t.Fatalf("trust_chain_certificates has %d elements, want exactly 1 (all anchors in one PEM blob)", n)
	}
	res.anchors = parsePEMCerts(t, resp.GetTrustChainCertificates()[0])
	if err := resp.GetValidUntil().CheckValid(); err != nil {
		t.Fatalf("valid_until: %v", err)
	}
	if got, want := resp.GetValidUntil().AsTime(), res.chain[0].NotAfter; !got.Equal(want) {
		t.Errorf("valid_until = %s, want leaf NotAfter %s", got, want)
	}
	return res
}

// servingChain performs a TLS handshake with the Sentry gRPC port (ALPN h2,
// no verification) and returns the presented certificate chain.
func servingChain(t testing.TB, s *sentryProc) ([]*x509.Certificate, tls.ConnectionState) {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", s.addr(), &tls.Config{
		InsecureSkipVerify: true, //nolint:gosec // chain is verified by the caller with go-spiffe
		NextProtos:         []string{"h2"},
	})
	if err != nil {
		t.Fatalf("TLS handshake with sentry: %v", err)
	}
	defer conn.Close()
	st := conn.ConnectionState()
	return st.PeerCertificates, st
}

func publicKeyEqual(a, b crypto.PublicKey) bool {
	type eq interface{ Equal(crypto.PublicKey) bool }
	ae, ok := a.(eq)
	return ok && ae.Equal(b)
}

// checkSVIDLeaf checks the X509-SVID leaf rules (SPIFFE X509-SVID spec §4)
// plus the EKUs Dapr relies on for mTLS in both directions.
func checkSVIDLeaf(t testing.TB, leaf *x509.Certificate) {
	t.Helper()
	var errs []error
	if len(leaf.URIs) != 1 {
		errs = append(errs, fmt.Errorf("%d URI SANs, want exactly 1", len(leaf.URIs)))
	}
	if leaf.IsCA {
		errs = append(errs, errors.New("leaf has CA=true"))
	}
	if leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		errs = append(errs, errors.New("leaf lacks digitalSignature key usage"))
	}
	if leaf.KeyUsage&(x509.KeyUsageCertSign|x509.KeyUsageCRLSign) != 0 {
		errs = append(errs, errors.New("leaf has keyCertSign/cRLSign"))
	}
	var server, client bool
	for _, u := range leaf.ExtKeyUsage {
		server = server || u == x509.ExtKeyUsageServerAuth
		client = client || u == x509.ExtKeyUsageClientAuth
	}
	if !server || !client {
		errs = append(errs, fmt.Errorf("leaf EKU %v lacks serverAuth and/or clientAuth", leaf.ExtKeyUsage))
	}
	if err := errors.Join(errs...); err != nil {
		t.Errorf("X509-SVID leaf %v: %v", leaf.URIs, err)
	}
}
