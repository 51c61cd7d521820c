package main

// One daprd starting in a pod, as Dapr v1.18.3 does it (pkg/security/sentry.go and
// dapr/kit crypto/spiffe): a fresh Ed25519 key and an empty-template CSR, a new gRPC connection
// whose TLS is go-spiffe's (Sentry's SPIFFE ID authorised against the ConfigMap's anchors, Go's
// crypto/tls defaults), SignCertificate with validator KUBERNETES and the pod's token, wrapped in
// the same retry interceptor settings (5 tries, 3 s each, 50 ms ±10 % apart, retrying
// Unavailable, ResourceExhausted and a per-try timeout). When all tries fail, daprd exits and
// the kubelet restarts it (wave.go: the pod goes back in the queue after the kubelet's back-off)
// and it starts over with a new key and connection. Every request after a pod's first is a
// retry; a pod is an error only if it is not certified when the wave's time is up, or if what it
// got back is not a valid certificate.

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffegrpc/grpccredentials"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	sentryv1pb "github.com/dapr/dapr/pkg/proto/sentry/v1"
)

const (
	// pkg/security/sentry.go: sentryMaxRetries, sentrySignTimeout; go-grpc-middleware's default
	// backoff (BackoffLinearWithJitter(50ms, 0.10)).
	daprdTries   = 5
	daprdBackoff = 50 * time.Millisecond
)

// tryTimeout is daprd's per-try timeout (sentrySignTimeout, 3 s); the smoke raises it so that a
// slow machine cannot turn into extra requests (it checks counts).
var tryTimeout = 3 * time.Second

// trust is what the injector hands daprd: the anchors (DAPR_TRUST_ANCHORS) and Sentry's ID.
type trust struct {
	bundle   *x509bundle.Bundle
	roots    *x509.CertPool
	sentryID spiffeid.ID
}

func newTrust(anchorsPEM []byte) (*trust, error) {
	td := spiffeid.RequireTrustDomainFromString(trustDomain)
	b, err := x509bundle.Parse(td, anchorsPEM)
	if err != nil {
		return nil, fmt.Errorf("trust anchors: %w", err)
	}
	roots := x509.NewCertPool()
	for _, c := range b.X509Authorities() {
		roots.AddCert(c)
	}
	id, err := spiffeid.FromString(sentryID)
	if err != nil {
		return nil, err
	}
	return &trust{bundle: b, roots: roots, sentryID: id}, nil
}

// outcome of one pod's start.
type outcome struct {
	certified bool
	latency   time.Duration // first request to certificate
	requests  int           // SignCertificate calls sent
	restarts  int           // daprd exits after all tries failed
	failures  map[string]int
	err       error // why the pod is an error (not certified, or a bad certificate)
}

func (o *outcome) fail(err error) {
	if o.failures == nil {
		o.failures = map[string]int{}
	}
	o.failures[failureKind(err)]++
}

// failureKind is the status code and the start of the message (bounded, for the report).
func failureKind(err error) string {
	st, _ := status.FromError(err)
	msg := strings.Join(strings.Fields(st.Message()), " ")
	if len(msg) > 70 {
		msg = msg[:70] + "…"
	}
	return st.Code().String() + ": " + msg
}

// requestSVID is one daprd process's request function. done reports that the pod got an
// answer that ends its start: a certificate (err nil) or an invalid one (err set).
func requestSVID(ctx context.Context, addr string, tr *trust, p *pod, o *outcome) (done bool, err error) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return true, err
	}
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, new(x509.CertificateRequest), key)
	if err != nil {
		return true, err
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(
		grpccredentials.TLSClientCredentials(tr.bundle, tlsconfig.AuthorizeID(tr.sentryID))))
	if err != nil {
		return true, err
	}
	defer conn.Close()
	client := sentryv1pb.NewCAClient(conn)
	req := &sentryv1pb.SignCertificateRequest{
		CertificateSigningRequest: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER}),
		Id:                        p.appID,
		Token:                     p.token,
		Namespace:                 workloadNS,
		TokenValidator:            sentryv1pb.SignCertificateRequest_KUBERNETES,
	}
	for try := 0; try < daprdTries; try++ {
		if try > 0 {
			jitter := 1 + 0.1*(2*mrand.Float64()-1)
			select {
			case <-ctx.Done():
				return false, nil
			case <-time.After(time.Duration(float64(daprdBackoff) * jitter)):
			}
		}
		tryCtx, cancel := context.WithTimeout(ctx, tryTimeout)
		resp, err := client.SignCertificate(tryCtx, req)
		cancel()
		o.requests++
		if err == nil {
			return true, checkLeaf(resp.GetWorkloadCertificate(), tr, p, key.Public().(ed25519.PublicKey))
		}
		o.fail(err)
		if ctx.Err() != nil {
			return false, nil
		}
		switch status.Code(err) {
		case codes.DeadlineExceeded, codes.Canceled, codes.Unavailable, codes.ResourceExhausted:
			continue
		}
		return false, nil
	}
	return false, nil
}

// checkLeaf verifies the chain against the anchors and the leaf's SPIFFE ID and key.
func checkLeaf(chainPEM []byte, tr *trust, p *pod, pub ed25519.PublicKey) error {
	var certs []*x509.Certificate
	for rest := chainPEM; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return fmt.Errorf("pod %s: bad certificate: %w", p.name, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return fmt.Errorf("pod %s: no certificate in the answer", p.name)
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	leaf := certs[0]
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: tr.roots, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return fmt.Errorf("pod %s: chain does not verify: %w", p.name, err)
	}
	want := "spiffe://public/ns/" + workloadNS + "/" + p.appID
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != want {
		return fmt.Errorf("pod %s: leaf URIs %v, want %s", p.name, leaf.URIs, want)
	}
	if got, ok := leaf.PublicKey.(ed25519.PublicKey); !ok || !got.Equal(pub) {
		return errors.New("pod " + p.name + ": leaf is not for the CSR's key")
	}
	return nil
}
