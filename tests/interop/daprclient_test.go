package interop

// Tests (a), (b) and (c): Dapr's real client code, github.com/dapr/dapr/pkg/security
// (what daprd and the control-plane services use), against the Sentry under test.

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/dapr/dapr/pkg/healthz"
	"github.com/dapr/dapr/pkg/modes"
	"github.com/dapr/dapr/pkg/security"
	"github.com/dapr/kit/crypto/spiffe"
	spiffecontext "github.com/dapr/kit/crypto/spiffe/context"
)

const (
	clientReadyTimeout = 30 * time.Second
	// How long a client that must be refused is given (see expectClientFailure).
	clientFailTimeout = 8 * time.Second
)

type clientOpts struct {
	appID string
	ns    string // request namespace (OverrideRequestNamespace); default "default"
	// control plane as configured in the client; defaults: localhost / dapr-system
	cpTrustDomain string
	cpNamespace   string
	// trust anchors: anchorsFile (TrustAnchorsFile) if set, else anchors
	// (TrustAnchors), else the Sentry's DIR/ca.crt bytes.
	anchors     []byte
	anchorsFile string
	keyAlg      *spiffe.KeyAlgorithm
}

type daprClient struct {
	opts    clientOpts
	handler security.Handler
}

func (o *clientOpts) defaults() {
	if o.ns == "" {
		o.ns = "default"
	}
	if o.cpTrustDomain == "" {
		o.cpTrustDomain = sentryTrustDomain
	}
	if o.cpNamespace == "" {
		o.cpNamespace = sentryNamespace
	}
}

// newProvider builds a pkg/security provider exactly like daprd does
// (cmd/daprd/app), in standalone mode with mTLS enabled and no token file
// (so the request carries no token and validator UNKNOWN, which a standalone
// Sentry resolves to its default, INSECURE).
func newProvider(t testing.TB, s *sentryProc, o clientOpts) security.Provider {
	t.Helper()
	o.defaults()
	opts := security.Options{
		SentryAddress:            s.addr(),
		ControlPlaneTrustDomain:  o.cpTrustDomain,
		ControlPlaneNamespace:    o.cpNamespace,
		AppID:                    o.appID,
		MTLSEnabled:              true,
		Mode:                     modes.StandaloneMode,
		Healthz:                  healthz.New(),
		OverrideRequestNamespace: &o.ns,
		KeyAlgorithm:             o.keyAlg,
	}
	switch {
	case o.anchorsFile != "":
		opts.TrustAnchorsFile = &o.anchorsFile
	case o.anchors != nil:
		opts.TrustAnchors = o.anchors
	default:
		opts.TrustAnchors = s.anchorsPEM(t)
	}
	p, err := security.New(context.Background(), opts)
	if err != nil {
		t.Fatalf("security.New: %v", err)
	}
	return p
}

// startClient runs a provider until test cleanup and waits for its handler
// (i.e. its first SVID).
func startClient(t testing.TB, s *sentryProc, o clientOpts) *daprClient {
	t.Helper()
	o.defaults()
	p := newProvider(t, s, o)
	ctx, cancel := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	go func() { runErr <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-runErr:
		case <-time.After(10 * time.Second):
			t.Errorf("security provider %q did not stop", o.appID)
		}
	})

	hctx, hcancel := context.WithTimeout(ctx, clientReadyTimeout)
	defer hcancel()
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
	case err := <-runErr:
		t.Fatalf("Dapr security provider for %q (ns %q) failed: %v", o.appID, o.ns, err)
	case r := <-hch:
		if r.err != nil {
			t.Fatalf("Dapr security provider for %q (ns %q) not ready after %s: %v", o.appID, o.ns, clientReadyTimeout, r.err)
		}
		return &daprClient{opts: o, handler: r.h}
	}
	return nil
}

// expectClientFailure runs a provider that must never obtain an SVID. Dapr's
// client does not give up on a refused server identity: its blocking dial
// (WithReturnConnectionError) keeps retrying until its context ends, then
// reports the last handshake error. So: bounded context, expect no identity,
// and return the error for the caller to check the reason.
func expectClientFailure(t testing.TB, s *sentryProc, o clientOpts) error {
	t.Helper()
	o.defaults()
	p := newProvider(t, s, o)
	ctx, cancel := context.WithTimeout(context.Background(), clientFailTimeout)
	defer cancel()
	runErr := make(chan error, 1)
	go func() { runErr <- p.Run(ctx) }()
	if h, err := p.Handler(ctx); err == nil {
		t.Fatalf("client %q (control plane %s/%s) obtained identity %s, expected it to refuse the Sentry",
			o.appID, o.cpTrustDomain, o.cpNamespace, h.ID())
	}
	err := <-runErr
	if err == nil {
		t.Fatalf("client %q: security provider returned no error", o.appID)
	}
	return err
}

// isSentryIDRefusal: go-spiffe's AuthorizeID error for the Sentry's ID, as
// quoted inside the gRPC connection error.
func isSentryIDRefusal(err error) bool {
	m := err.Error()
	return strings.Contains(m, "unexpected ID") && strings.Contains(m, "spiffe://localhost/ns/dapr-system/dapr-sentry")
}

func (c *daprClient) svid(t testing.TB) *x509svid.SVID {
	t.Helper()
	src, ok := spiffecontext.X509From(c.handler.WithSVIDContext(context.Background()))
	if !ok {
		t.Fatal("no X.509 SVID source in the handler context")
	}
	sv, err := src.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	return sv
}

func expectedWorkloadID(ns, appID string) string {
	return "spiffe://public/ns/" + ns + "/" + appID
}

// checkClientSVID checks the SVID a Dapr client obtained.
func checkClientSVID(t testing.TB, s *sentryProc, c *daprClient, wantID, wantTD string) *x509svid.SVID {
	t.Helper()
	if got := c.handler.ID().String(); got != wantID {
		t.Errorf("handler.ID() = %s, want %s", got, wantID)
	}
	sv := c.svid(t)
	if sv.ID.String() != wantID {
		t.Errorf("SVID ID = %s, want %s", sv.ID, wantID)
	}
	anchors := s.anchorsPEM(t)
	id, _, err := x509svid.Verify(sv.Certificates, bundleFor(t, wantTD, anchors))
	if err != nil {
		t.Fatalf("x509svid.Verify(client SVID) against ca.crt: %v", err)
	}
	if id.String() != wantID {
		t.Errorf("verified ID = %s, want %s", id, wantID)
	}
	leaf := sv.Certificates[0]
	checkSVIDLeaf(t, leaf)
	if !publicKeyEqual(sv.PrivateKey.Public(), leaf.PublicKey) {
		t.Error("leaf public key is not the client's CSR key")
	}
	// Chain = leaf + issuer chain (root excluded).
	issuer := parsePEMCerts(t, s.readFile(t, "issuer.crt"))
	if len(sv.Certificates) < 2 || !sv.Certificates[1].Equal(issuer[0]) {
		t.Errorf("workload chain has %d certs; want leaf followed by issuer.crt", len(sv.Certificates))
	}
	for _, c := range sv.Certificates {
		if c.CheckSignatureFrom(c) == nil {
			t.Errorf("workload chain contains a self-signed certificate (%s); the root must not be sent", c.Subject)
		}
	}
	got, err := c.handler.CurrentTrustAnchors(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !sameCerts(parsePEMCerts(t, got), parsePEMCerts(t, anchors)) {
		t.Error("client's CurrentTrustAnchors differ from ca.crt")
	}
	return sv
}

// TestDaprClient (a): daprd's security provider gets an SVID from the Sentry,
// having authorised the Sentry's serving identity
// spiffe://localhost/ns/dapr-system/dapr-sentry against ca.crt; clients that
// expect another Sentry identity or trust other anchors must fail.
func TestDaprClient(t *testing.T) {
	s := startSentry(t, sentryOpts{})

	t.Run("workload/TrustAnchors", func(t *testing.T) {
		c := startClient(t, s, clientOpts{appID: "myapp", ns: "default"})
		sv := checkClientSVID(t, s, c, expectedWorkloadID("default", "myapp"), "public")
		if _, ok := sv.Certificates[0].PublicKey.(ed25519.PublicKey); !ok {
			t.Errorf("leaf key is %T, want ed25519 (Dapr's default CSR key)", sv.Certificates[0].PublicKey)
		}
		if len(sv.Certificates[0].DNSNames) != 0 {
			t.Errorf("workload leaf has DNS SANs %v, want none", sv.Certificates[0].DNSNames)
		}
	})

	t.Run("workload/TrustAnchorsFile", func(t *testing.T) {
		f := filepath.Join(t.TempDir(), "ca.crt")
		if err := os.WriteFile(f, s.anchorsPEM(t), 0o644); err != nil {
			t.Fatal(err)
		}
		c := startClient(t, s, clientOpts{appID: "other-app", ns: "team-a", anchorsFile: f})
		checkClientSVID(t, s, c, expectedWorkloadID("team-a", "other-app"), "public")
	})

	// Control-plane services in the control-plane namespace ask for the
	// control-plane trust domain (pkg/security sets trust_domain for them).
	t.Run("control-plane/dapr-scheduler", func(t *testing.T) {
		c := startClient(t, s, clientOpts{appID: "dapr-scheduler", ns: sentryNamespace})
		sv := checkClientSVID(t, s, c, "spiffe://localhost/ns/dapr-system/dapr-scheduler", sentryTrustDomain)
		checkDNSSANs(t, sv.Certificates[0], expectedDNS("dapr-scheduler"))
	})
	t.Run("control-plane/dapr-injector-rsa", func(t *testing.T) {
		// The injector and operator use RSA keys since Dapr 1.18.
		c := startClient(t, s, clientOpts{appID: "dapr-injector", ns: sentryNamespace, keyAlg: new(spiffe.KeyAlgorithmRSA)})
		sv := checkClientSVID(t, s, c, "spiffe://localhost/ns/dapr-system/dapr-injector", sentryTrustDomain)
		if _, ok := sv.Certificates[0].PublicKey.(*rsa.PublicKey); !ok {
			t.Errorf("leaf key is %T, want *rsa.PublicKey", sv.Certificates[0].PublicKey)
		}
		checkDNSSANs(t, sv.Certificates[0], expectedDNS("dapr-injector"))
	})

	t.Run("reject/wrong-control-plane-namespace", func(t *testing.T) {
		t.Parallel()
		err := expectClientFailure(t, s, clientOpts{appID: "myapp", cpNamespace: "not-dapr-system"})
		t.Logf("client error (expected): %v", err)
		if !isSentryIDRefusal(err) {
			t.Errorf("want the failure to be the server-ID authorisation (unexpected ID ...dapr-sentry), got: %v", err)
		}
	})
	t.Run("reject/wrong-control-plane-trust-domain", func(t *testing.T) {
		t.Parallel()
		err := expectClientFailure(t, s, clientOpts{appID: "myapp", cpTrustDomain: "example.org"})
		t.Logf("client error (expected): %v", err)
		// Dapr's static trust anchors serve every trust domain, so the chain
		// verifies and the ID authorisation is what refuses the server.
		if !isSentryIDRefusal(err) {
			t.Errorf("want the failure to be the server-ID authorisation (unexpected ID ...dapr-sentry), got: %v", err)
		}
	})
	t.Run("reject/foreign-trust-anchors", func(t *testing.T) {
		t.Parallel()
		foreign := newTestCA(t, keyP256, "foreign.example")
		err := expectClientFailure(t, s, clientOpts{appID: "myapp", anchors: foreign.rootPEM})
		t.Logf("client error (expected): %v", err)
		if !strings.Contains(err.Error(), "certificate signed by unknown authority") {
			t.Errorf("want a chain-verification failure, got: %v", err)
		}
	})
}

// ---------------------------------------------------------------------------
// (b) mutual TLS between two Dapr clients

type exchangeResult struct {
	serverSaw []*x509.Certificate // client chain as seen by the server
	clientSaw []*x509.Certificate // server chain as seen by the client
}

// mtlsExchange opens server.NetListenerID(lis, allowClient) on 127.0.0.1,
// dials it with client.NetDialerID(expectServer), and exchanges ping/pong.
func mtlsExchange(server, client *daprClient, allowClient, expectServer spiffeid.ID) (exchangeResult, error) {
	var res exchangeResult
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return res, err
	}
	tlis := server.handler.NetListenerID(lis, allowClient)
	defer tlis.Close()

	srvErr := make(chan error, 1)
	go func() {
		conn, err := tlis.Accept()
		if err != nil {
			srvErr <- err
			return
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		line, err := bufio.NewReader(conn).ReadString('\n')
		if err != nil {
			srvErr <- fmt.Errorf("server read: %w", err)
			return
		}
		if line != "ping from "+client.opts.appID+"\n" {
			srvErr <- fmt.Errorf("server got %q", line)
			return
		}
		res.serverSaw = conn.(*tls.Conn).ConnectionState().PeerCertificates
		_, err = fmt.Fprintf(conn, "pong from %s\n", server.opts.appID)
		srvErr <- err
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := client.handler.NetDialerID(ctx, expectServer, 5*time.Second)("tcp", lis.Addr().String())
	if err != nil {
		tlis.Close()
		err = errors.Join(fmt.Errorf("client dial: %w", err), <-srvErr)
		return res, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	cliErr := func() error {
		if _, err := fmt.Fprintf(conn, "ping from %s\n", client.opts.appID); err != nil {
			return fmt.Errorf("client write: %w", err)
		}
		line, err := bufio.NewReader(conn).ReadString('\n')
		if err != nil {
			return fmt.Errorf("client read: %w", err)
		}
		if line != "pong from "+server.opts.appID+"\n" {
			return fmt.Errorf("client got %q", line)
		}
		res.clientSaw = conn.(*tls.Conn).ConnectionState().PeerCertificates
		return nil
	}()
	if cliErr != nil {
		conn.Close()
	}
	err = errors.Join(cliErr, <-srvErr) // also orders the server goroutine's write of res.serverSaw
	return res, err
}

func mustExchange(t testing.TB, server, client *daprClient) exchangeResult {
	t.Helper()
	res, err := mtlsExchange(server, client, client.handler.ID(), server.handler.ID())
	if err != nil {
		t.Fatalf("mTLS %s -> %s: %v", client.opts.appID, server.opts.appID, err)
	}
	if len(res.serverSaw) == 0 || len(res.clientSaw) == 0 {
		t.Fatal("no peer certificates recorded")
	}
	if id, _ := x509svid.IDFromCert(res.serverSaw[0]); id != client.handler.ID() {
		t.Errorf("server saw client ID %s, want %s", id, client.handler.ID())
	}
	if id, _ := x509svid.IDFromCert(res.clientSaw[0]); id != server.handler.ID() {
		t.Errorf("client saw server ID %s, want %s", id, server.handler.ID())
	}
	return res
}

// TestDaprMTLS (b): two Dapr clients with different app ids complete mutual
// TLS over 127.0.0.1 using pkg/security's own TLS helpers (NetListenerID /
// NetDialerID and the gRPC MTLS options), which verify the peer chain against
// ca.crt and authorise the peer's SPIFFE ID.
func TestDaprMTLS(t *testing.T) {
	s := startSentry(t, sentryOpts{})
	a := startClient(t, s, clientOpts{appID: "app-a"})
	b := startClient(t, s, clientOpts{appID: "app-b"})
	c := startClient(t, s, clientOpts{appID: "app-c", ns: "other"})

	t.Run("net/a->b", func(t *testing.T) { mustExchange(t, b, a) })
	t.Run("net/b->a", func(t *testing.T) { mustExchange(t, a, b) })
	t.Run("net/cross-namespace", func(t *testing.T) { mustExchange(t, b, c) })

	t.Run("net/reject-unauthorised-client", func(t *testing.T) {
		// b only accepts a; c presents a valid SVID with another ID.
		_, err := mtlsExchange(b, c, a.handler.ID(), b.handler.ID())
		if err == nil {
			t.Fatal("server accepted a client whose SPIFFE ID is not authorised")
		}
		t.Logf("rejected as expected: %v", err)
	})
	t.Run("net/reject-unexpected-server", func(t *testing.T) {
		_, err := mtlsExchange(b, a, a.handler.ID(), mustID(t, expectedWorkloadID("default", "app-x")))
		if err == nil || !strings.Contains(err.Error(), "unexpected ID") {
			t.Fatalf("client accepted a server with an unexpected SPIFFE ID (err=%v)", err)
		}
	})

	t.Run("grpc/a->b", func(t *testing.T) {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := grpc.NewServer(b.handler.GRPCServerOptionMTLS())
		healthpb.RegisterHealthServer(srv, health.NewServer())
		go srv.Serve(lis)
		defer srv.Stop()

		call := func(expect spiffeid.ID) error {
			conn, err := grpc.NewClient(lis.Addr().String(), a.handler.GRPCDialOptionMTLS(expect))
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
		if err := call(b.handler.ID()); err != nil {
			t.Fatalf("gRPC over Dapr mTLS a->b: %v", err)
		}
		if err := call(mustID(t, expectedWorkloadID("default", "app-x"))); err == nil {
			t.Fatal("gRPC client accepted a server with an unexpected SPIFFE ID")
		}
	})
}

// TestDaprRenewal (c): with workloadCertTTL=10s and allowedClockSkew=1s the
// Dapr client renews its SVID at ~50% of the lifetime and keeps working.
func TestDaprRenewal(t *testing.T) {
	const (
		ttl  = 10 * time.Second
		skew = 1 * time.Second
	)
	s := startSentry(t, sentryOpts{workloadCertTTL: ttl.String(), allowedClockSkew: skew.String()})
	a := startClient(t, s, clientOpts{appID: "renew-a"})
	b := startClient(t, s, clientOpts{appID: "renew-b"})

	serving0, _ := servingChain(t, s)
	first := a.svid(t).Certificates[0]
	if life := first.NotAfter.Sub(first.NotBefore); life < ttl+skew-2*time.Second || life > ttl+skew+2*time.Second {
		t.Errorf("leaf lifetime %s, want ~%s (workloadCertTTL + allowedClockSkew)", life, ttl+skew)
	}
	mustExchange(t, b, a)

	cur := first
	for round := 1; round <= 2; round++ {
		expect := cur.NotBefore.Add(cur.NotAfter.Sub(cur.NotBefore) / 2)
		deadline := cur.NotAfter.Add(2 * time.Second)
		var next *x509.Certificate
		for time.Now().Before(deadline) {
			if c := a.svid(t).Certificates[0]; c.SerialNumber.Cmp(cur.SerialNumber) != 0 {
				next = c
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if next == nil {
			t.Fatalf("round %d: SVID not renewed before the old one expired (%s)", round, cur.NotAfter)
		}
		seen := time.Now()
		t.Logf("round %d: renewed at %s (expected ~%s); new leaf %s .. %s",
			round, seen.Format(time.RFC3339Nano), expect.Format(time.RFC3339Nano),
			next.NotBefore.Format(time.RFC3339), next.NotAfter.Format(time.RFC3339))
		if seen.Before(expect.Add(-1*time.Second)) || seen.After(expect.Add(3*time.Second)) {
			t.Errorf("round %d: renewal at %s, want ~%s (50%% of lifetime)", round, seen, expect)
		}
		if !next.NotAfter.After(cur.NotAfter) {
			t.Errorf("round %d: renewed leaf NotAfter %s not after previous %s", round, next.NotAfter, cur.NotAfter)
		}
		checkClientSVID(t, s, a, expectedWorkloadID("default", "renew-a"), "public")

		// A new mTLS connection after renewal succeeds, with the new cert.
		res := mustExchange(t, b, a)
		if !res.serverSaw[0].Equal(a.svid(t).Certificates[0]) {
			t.Errorf("round %d: client presented %s, want its current SVID", round, res.serverSaw[0].SerialNumber)
		}
		if slices.ContainsFunc(res.serverSaw, func(c *x509.Certificate) bool { return c.Equal(first) }) {
			t.Errorf("round %d: client still presents the pre-renewal certificate", round)
		}
		mustExchange(t, a, b)
		cur = next
	}

	// Sentry renews its own serving certificate too (same TTL, at 50%); by now
	// (> one lifetime after start) it must be a different, valid one.
	serving1, _ := servingChain(t, s)
	if serving1[0].Equal(serving0[0]) {
		t.Errorf("Sentry still serves its initial certificate (NotAfter %s) after %s; it must renew it",
			serving0[0].NotAfter, time.Since(serving0[0].NotBefore).Round(time.Second))
	}
	verifyLeafChain(t, serving1, s.anchorsPEM(t), sentryTrustDomain, sentrySPIFFEID(t).String())
}
