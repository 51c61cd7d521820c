package interop

// Test (f): on-disk bundle compatibility (DIR/ca.crt, issuer.crt, issuer.key)
// between Dapr's sentry ($DAPR_SENTRY_BIN) and the Sentry under test
// ($SENTRY_BIN), plus user-supplied bundles in the key formats Dapr accepts.

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"
)

var bundleFiles = []string{"ca.crt", "issuer.crt", "issuer.key"}

func snapshotBundle(t testing.TB, dir string) map[string][]byte {
	t.Helper()
	m := map[string][]byte{}
	for _, f := range bundleFiles {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		m[f] = b
	}
	return m
}

func checkBundleUnchanged(t testing.TB, dir string, before map[string][]byte, who string) {
	t.Helper()
	for _, f := range bundleFiles {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if !bytes.Equal(b, before[f]) {
			t.Errorf("%s rewrote %s of an existing valid bundle (it must load it, not regenerate/rewrite it)", who, f)
		}
	}
}

// checkServesBundle checks that a running Sentry issues from the bundle in
// its directory: serving identity and leaves chain to ca.crt, the anchors it
// returns are ca.crt, and Dapr's client accepts it.
func checkServesBundle(t *testing.T, s *sentryProc, b map[string][]byte) {
	t.Helper()
	anchors := b["ca.crt"]
	anchorCerts := parsePEMCerts(t, anchors)
	issuer := parsePEMCerts(t, b["issuer.crt"])

	chain, _ := servingChain(t, s)
	verifyLeafChain(t, chain, anchors, sentryTrustDomain, sentrySPIFFEID(t).String())
	if len(chain) < 2 || !chain[1].Equal(issuer[0]) {
		t.Error("serving chain is not [leaf, issuer.crt...]")
	}

	ca := dialCA(t, s, anchors)
	r := signInsecure(t, ca, genKey(t, keyEd25519), "bundle-app", "default", "")
	verifyLeafChain(t, r.chain, anchors, "public", "spiffe://public/ns/default/bundle-app")
	if !sameCerts(r.anchors, anchorCerts) {
		t.Errorf("served trust anchors (%d certs) differ from the bundle's ca.crt (%d certs)", len(r.anchors), len(anchorCerts))
	}
	if len(r.chain) < 2 || !r.chain[1].Equal(issuer[0]) {
		t.Error("issued chain is not [leaf, issuer.crt...]")
	}

	c := startClient(t, s, clientOpts{appID: "bundle-client", anchors: anchors})
	checkClientSVID(t, s, c, expectedWorkloadID("default", "bundle-client"), "public")
}

func TestBundleCompat(t *testing.T) {
	dapr := requireDaprSentry(t)

	t.Run("dapr-generated/loaded-by-SENTRY_BIN", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "creds")
		if err := generateBundle(dapr, dir); err != nil {
			t.Fatalf("Dapr sentry generating a bundle: %v", err)
		}
		before := snapshotBundle(t, dir)
		s := startSentry(t, sentryOpts{dir: dir})
		checkServesBundle(t, s, before)
		s.stopNow(t)
		checkBundleUnchanged(t, dir, before, sentryBin)
	})

	t.Run("SENTRY_BIN-generated/loaded-by-dapr", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "creds")
		if err := generateBundle(sentryBin, dir); err != nil {
			t.Fatalf("SENTRY_BIN generating a bundle: %v", err)
		}
		for _, f := range bundleFiles {
			st, err := os.Stat(filepath.Join(dir, f))
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s written with mode %v", f, st.Mode().Perm())
			if f == "issuer.key" && st.Mode().Perm()&0o077 != 0 {
				t.Errorf("issuer.key is group/world accessible (mode %v); Dapr writes 0600", st.Mode().Perm())
			}
		}
		before := snapshotBundle(t, dir)
		s := startSentry(t, sentryOpts{bin: dapr, dir: dir})
		checkServesBundle(t, s, before)
		s.stopNow(t)
		checkBundleUnchanged(t, dir, before, dapr)
	})

	// Bundles not made by any Sentry: Ed25519/PKCS#8 (v1.18 style, with the
	// root appended to issuer.crt, which Sentry strips), ECDSA P-256 with a
	// SEC1 "EC PRIVATE KEY" (Dapr <= 1.17, `dapr mtls renew-certificate`) and
	// RSA with a PKCS#1 "RSA PRIVATE KEY" (e.g. cert-manager issued).
	for _, tc := range []struct {
		kind           keyKind
		issuerWithRoot bool
	}{
		{keyEd25519, true},
		{keyP256, false},
		{keyRSA2048, false},
	} {
		t.Run("user-supplied/"+string(tc.kind), func(t *testing.T) {
			ca := newTestCA(t, tc.kind, sentryTrustDomain)
			dir := filepath.Join(t.TempDir(), "creds")
			ca.write(t, dir, tc.issuerWithRoot)
			before := snapshotBundle(t, dir)
			bins := []string{sentryBin}
			if dapr != sentryBin {
				bins = append(bins, dapr) // validates the bundle itself
			}
			for _, bin := range bins {
				s := startSentry(t, sentryOpts{bin: bin, dir: dir})
				checkServesBundle(t, s, before)
				s.stopNow(t)
				checkBundleUnchanged(t, dir, before, bin)
			}
		})
	}
}

// ---------------------------------------------------------------------------
// A test CA in Dapr's bundle profile (reference §4.2 / §4.3).

type testCA struct {
	kind               keyKind
	root, issuer       *x509.Certificate
	rootPEM, issuerPEM []byte
	issuerKey          crypto.Signer
	issuerKeyPEM       []byte
	issuerKeyBlockType string
}

func randSerial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatal(err)
	}
	return n.Add(n, big.NewInt(1))
}

func newTestCA(t testing.TB, kind keyKind, td string) *testCA {
	t.Helper()
	now := time.Now()
	rootKey := genKey(t, kind)
	rootTmpl := &x509.Certificate{
		SerialNumber:          randSerial(t),
		Subject:               pkix.Name{Organization: []string{td}},
		NotBefore:             now.Add(-15 * time.Minute),
		NotAfter:              now.Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	rootDER, err := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, rootKey.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := x509.ParseCertificate(rootDER)

	issKey := genKey(t, kind)
	issTmpl := &x509.Certificate{
		SerialNumber:          randSerial(t),
		Subject:               pkix.Name{Organization: []string{"spiffe://" + td + "/ns/" + sentryNamespace + "/dapr-sentry"}},
		NotBefore:             now.Add(-15 * time.Minute),
		NotAfter:              now.Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	issDER, err := x509.CreateCertificate(rand.Reader, issTmpl, root, issKey.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	iss, _ := x509.ParseCertificate(issDER)

	var blk *pem.Block
	switch k := issKey.(type) {
	case ed25519.PrivateKey:
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		blk = &pem.Block{Type: "PRIVATE KEY", Bytes: der}
	case *ecdsa.PrivateKey:
		der, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		blk = &pem.Block{Type: "EC PRIVATE KEY", Bytes: der}
	case *rsa.PrivateKey:
		blk = &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}
	}
	return &testCA{
		kind:               kind,
		root:               root,
		issuer:             iss,
		rootPEM:            pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rootDER}),
		issuerPEM:          pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: issDER}),
		issuerKey:          issKey,
		issuerKeyPEM:       pem.EncodeToMemory(blk),
		issuerKeyBlockType: blk.Type,
	}
}

func (c *testCA) write(t testing.TB, dir string, issuerWithRoot bool) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	issuer := c.issuerPEM
	if issuerWithRoot {
		issuer = append(append([]byte{}, c.issuerPEM...), c.rootPEM...)
	}
	for name, b := range map[string][]byte{"ca.crt": c.rootPEM, "issuer.crt": issuer, "issuer.key": c.issuerKeyPEM} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}
