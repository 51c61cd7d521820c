package interop

// Test (d): go-spiffe's x509svid.Verify, with an x509bundle built from
// DIR/ca.crt, accepts every certificate the Sentry hands out or serves.

import (
	"crypto/x509"
	"slices"
	"testing"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// expectedDNS returns the DNS SANs Sentry adds for control-plane ids requested
// in its own namespace (reference §3.1 step 5). In standalone mode the
// scheduler's "cluster domain" is the control-plane trust domain.
func expectedDNS(id string) []string {
	ns := sentryNamespace
	switch id {
	case "dapr-injector":
		return []string{"dapr-sidecar-injector." + ns + ".svc"}
	case "dapr-operator":
		return []string{"dapr-webhook." + ns + ".svc"}
	case "dapr-scheduler":
		return []string{
			"dapr-scheduler-server-0.dapr-scheduler-server." + ns + ".svc." + sentryTrustDomain,
			"dapr-scheduler-server-1.dapr-scheduler-server." + ns + ".svc." + sentryTrustDomain,
			"dapr-scheduler-server-2.dapr-scheduler-server." + ns + ".svc." + sentryTrustDomain,
		}
	}
	return nil
}

func checkDNSSANs(t testing.TB, leaf *x509.Certificate, want []string) {
	t.Helper()
	got := slices.Clone(leaf.DNSNames)
	w := slices.Clone(want)
	slices.Sort(got)
	slices.Sort(w)
	if !slices.Equal(got, w) {
		t.Errorf("leaf %v DNS SANs = %q, want %q", leaf.URIs, leaf.DNSNames, want)
	}
}

// verifyLeafChain runs x509svid.Verify with a bundle for td built from
// anchorsPEM and checks the resulting SPIFFE ID.
func verifyLeafChain(t testing.TB, chain []*x509.Certificate, anchorsPEM []byte, td, wantID string) {
	t.Helper()
	id, chains, err := x509svid.Verify(chain, bundleFor(t, td, anchorsPEM))
	if err != nil {
		t.Fatalf("x509svid.Verify(%v): %v", chain[0].URIs, err)
	}
	if id.String() != wantID {
		t.Errorf("SPIFFE ID = %s, want %s", id, wantID)
	}
	if len(chains) == 0 {
		t.Error("no verified chain")
	}
	checkSVIDLeaf(t, chain[0])
	for _, c := range chain {
		if c.CheckSignatureFrom(c) == nil {
			t.Errorf("chain contains self-signed %q; the root must not be sent", c.Subject)
		}
	}
}

func TestSPIFFEVerify(t *testing.T) {
	s := startSentry(t, sentryOpts{})
	anchors := s.anchorsPEM(t)
	anchorCerts := parsePEMCerts(t, anchors)
	issuer := parsePEMCerts(t, s.readFile(t, "issuer.crt"))
	// dialCA authorises spiffe://localhost/ns/dapr-system/dapr-sentry against
	// ca.crt, like Dapr's client.
	ca := dialCA(t, s, anchors)

	for _, k := range []keyKind{keyEd25519, keyP256, keyRSA2048} {
		t.Run("workload/"+string(k), func(t *testing.T) {
			key := genKey(t, k)
			r := signInsecure(t, ca, key, "myapp", "default", "")
			verifyLeafChain(t, r.chain, anchors, "public", "spiffe://public/ns/default/myapp")
			leaf := r.chain[0]
			if !publicKeyEqual(key.Public(), leaf.PublicKey) {
				t.Error("leaf public key is not the CSR's key")
			}
			if len(leaf.DNSNames) != 0 {
				t.Errorf("workload leaf has DNS SANs %v", leaf.DNSNames)
			}
			if len(r.chain) != 2 || !r.chain[1].Equal(issuer[0]) {
				t.Errorf("workload_certificate = %d certs, want [leaf, issuer]", len(r.chain))
			}
			if !sameCerts(r.anchors, anchorCerts) {
				t.Error("trust_chain_certificates differ from ca.crt")
			}
		})
	}

	t.Run("workload/requested-trust-domain", func(t *testing.T) {
		r := signInsecure(t, ca, genKey(t, keyEd25519), "myapp", "team-b", "example.org")
		verifyLeafChain(t, r.chain, anchors, "example.org", "spiffe://example.org/ns/team-b/myapp")
	})

	t.Run("serving-cert", func(t *testing.T) {
		chain, st := servingChain(t, s)
		if st.NegotiatedProtocol != "h2" {
			t.Errorf("ALPN = %q, want h2 (grpc-go clients require it)", st.NegotiatedProtocol)
		}
		verifyLeafChain(t, chain, anchors, sentryTrustDomain, sentrySPIFFEID(t).String())
		if len(chain[0].DNSNames) != 0 {
			t.Errorf("serving cert has DNS SANs %v, want none", chain[0].DNSNames)
		}
		if len(chain) < 2 || !chain[1].Equal(issuer[0]) {
			t.Errorf("serving chain = %d certs, want [leaf, issuer...]", len(chain))
		}
	})

	for _, id := range []string{"dapr-injector", "dapr-operator", "dapr-scheduler"} {
		t.Run("control-plane/"+id, func(t *testing.T) {
			r := signInsecure(t, ca, genKey(t, keyEd25519), id, sentryNamespace, sentryTrustDomain)
			verifyLeafChain(t, r.chain, anchors, sentryTrustDomain, "spiffe://localhost/ns/dapr-system/"+id)
			checkDNSSANs(t, r.chain[0], expectedDNS(id))
		})
		t.Run("control-plane/"+id+"/other-namespace-no-dns", func(t *testing.T) {
			r := signInsecure(t, ca, genKey(t, keyEd25519), id, "default", "")
			verifyLeafChain(t, r.chain, anchors, "public", "spiffe://public/ns/default/"+id)
			checkDNSSANs(t, r.chain[0], nil)
		})
	}
	t.Run("control-plane/dapr-placement-no-dns", func(t *testing.T) {
		r := signInsecure(t, ca, genKey(t, keyEd25519), "dapr-placement", sentryNamespace, sentryTrustDomain)
		verifyLeafChain(t, r.chain, anchors, sentryTrustDomain, "spiffe://localhost/ns/dapr-system/dapr-placement")
		checkDNSSANs(t, r.chain[0], nil)
	})
}
