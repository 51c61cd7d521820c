package interop

// Kubernetes mode with --jwt-enabled, both ways between the Sentry under test
// and Dapr's own sentry ($DAPR_SENTRY_BIN), on the empty dapr-trust-bundle
// Secret and ConfigMap that Dapr's Helm chart creates (reference §5.4): what
// the first one generates there (ca.crt, issuer.crt, issuer.key, jwt.key and
// jwks.json in the Secret; ca.crt and jwks.json in the ConfigMap) is loaded by
// the second one without a single byte changing, and the second one issues
// JWT-SVIDs (to a workload authenticated by a pod-bound service-account token,
// KUBERNETES validator) whose kid is the ConfigMap's key and whose signature
// verifies against the ConfigMap's JWKS (jwx, the JOSE library Dapr uses).

import (
	"bytes"
	"context"
	"crypto/rsa"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"

	sentryv1pb "github.com/dapr/dapr/pkg/proto/sentry/v1"
)

// The keys Sentry must have written into the Helm-created objects.
var (
	kubeJWTSecretKeys    = []string{"ca.crt", "issuer.crt", "issuer.key", "jwt.key", "jwks.json"}
	kubeJWTConfigMapKeys = []string{"ca.crt", "jwks.json"}
)

// kubeJWTHandOver is one direction: first generates, second loads.
type kubeJWTHandOver struct {
	name          string
	cp, appsNS    string
	first, second string // binaries
}

func TestKubernetesJWTBundleCompat(t *testing.T) {
	dapr := requireDaprSentry(t)
	k := startKubeCluster(t)
	k.apply(t, filepath.Join(k.repo, "deploy", "crds", "configuration.yaml"))

	for _, h := range []kubeJWTHandOver{
		{name: "sentry-rs-then-dapr", cp: "jwt-rs-cp", appsNS: "jwt-rs-apps", first: sentryBin, second: dapr},
		{name: "dapr-then-sentry-rs", cp: "jwt-dapr-cp", appsNS: "jwt-dapr-apps", first: dapr, second: sentryBin},
	} {
		t.Run(h.name, func(t *testing.T) { testKubeJWTHandOver(t, k, h) })
	}
}

// kubeJWTWorkload is a pod with a dapr.io/app-id and its bound token.
type kubeJWTWorkload struct {
	appID, ns, token string
}

func testKubeJWTHandOver(t *testing.T, k *kubeCluster, h kubeJWTHandOver) {
	cp := h.cp
	kubeconfig := kubeSentryControlPlane(t, k, cp)
	k.createHelmTrustBundle(t, cp)
	sentryID := "spiffe://" + kubeTrustDomain + "/ns/" + cp + "/dapr-sentry"

	w := kubeJWTWorkload{appID: "jwt-app", ns: h.appsNS}
	k.createNamespace(t, w.ns)
	k.createServiceAccount(t, w.ns, "jwt-app")
	uid := k.createPod(t, w.ns, "jwt-app-7f9c1", "jwt-app", map[string]string{"dapr.io/app-id": w.appID})
	w.token = k.tokenRequest(t, w.ns, "jwt-app", &boundPod{"jwt-app-7f9c1", uid}, []string{sentryID}, 7200)

	// 1. The first one generates everything into the empty objects.
	first := startKubeSentryBin(t, h.first, kubeconfig, cp, "--jwt-enabled")
	first.name = sentryLabel(h.first)
	sec := k.secretData(t, cp, "dapr-trust-bundle")
	cm := k.configMapData(t, cp, "dapr-trust-bundle")
	for _, key := range kubeJWTSecretKeys {
		if len(sec[key]) == 0 {
			t.Fatalf("%s left Secret %s/dapr-trust-bundle without %s (keys: %v)", first.name, cp, key, keys(sec))
		}
	}
	for _, key := range kubeJWTConfigMapKeys {
		if cm[key] == "" {
			t.Fatalf("%s left ConfigMap %s/dapr-trust-bundle without %s (keys: %v)", first.name, cp, key, keys(cm))
		}
	}
	if !bytes.Equal(sec["ca.crt"], []byte(cm["ca.crt"])) {
		t.Error("the Secret's ca.crt differs from the ConfigMap's")
	}
	if !bytes.Equal(sec["jwks.json"], []byte(cm["jwks.json"])) {
		t.Errorf("the ConfigMap's jwks.json differs from the Secret's:\nSecret:    %s\nConfigMap: %s", sec["jwks.json"], cm["jwks.json"])
	}
	anchors := []byte(cm["ca.crt"])
	set, kid := checkGeneratedJWKS(t, first.name, []byte(cm["jwks.json"]))

	firstTok := kubeJWTSVID(t, first, anchors, cp, w, set, kid)
	first.stopNow(t)

	// 2. The second one loads them as they are.
	second := startKubeSentryBin(t, h.second, kubeconfig, cp, "--jwt-enabled")
	second.name = sentryLabel(h.second)
	secondTok := kubeJWTSVID(t, second, anchors, cp, w, set, kid)
	if firstTok.header["alg"] != secondTok.header["alg"] {
		t.Errorf("alg: %s %v, %s %v", first.name, firstTok.header["alg"], second.name, secondTok.header["alg"])
	}

	after := k.secretData(t, cp, "dapr-trust-bundle")
	for _, key := range kubeJWTSecretKeys {
		if !bytes.Equal(sec[key], after[key]) {
			t.Errorf("%s rewrote %s of Secret %s/dapr-trust-bundle that %s generated", second.name, key, cp, first.name)
		}
	}
	if got, want := sortedKeys(after), sortedKeys(sec); !slices.Equal(got, want) {
		t.Errorf("Secret keys after %s: %v, before: %v", second.name, got, want)
	}
	cmAfter := k.configMapData(t, cp, "dapr-trust-bundle")
	for _, key := range kubeJWTConfigMapKeys {
		if cm[key] != cmAfter[key] {
			t.Errorf("%s rewrote %s of ConfigMap %s/dapr-trust-bundle that %s generated", second.name, key, cp, first.name)
		}
	}
}

// sentryLabel names a binary in messages (both are called "sentry").
func sentryLabel(bin string) string {
	if isDaprSentry(bin) {
		return "Dapr's sentry"
	}
	return "SENTRY_BIN"
}

func sortedKeys[V any](m map[string]V) []string {
	out := keys(m)
	slices.Sort(out)
	return out
}

// checkGeneratedJWKS checks a JWKS as Sentry generates it (reference §4.5: one
// RSA-2048 key, alg RS256, use sig, with a kid) and returns it and the kid.
func checkGeneratedJWKS(t testing.TB, who string, jwksJSON []byte) (jwk.Set, string) {
	t.Helper()
	set, err := jwk.Parse(jwksJSON)
	if err != nil {
		t.Fatalf("jwx cannot parse the jwks.json %s generated: %v\n%s", who, err, jwksJSON)
	}
	if set.Len() != 1 {
		t.Fatalf("jwks.json generated by %s has %d keys, want 1", who, set.Len())
	}
	key, _ := set.Key(0)
	if key.KeyID() == "" {
		t.Fatalf("the key of jwks.json generated by %s has no kid", who)
	}
	if got := key.Algorithm().String(); got != "RS256" {
		t.Errorf("jwks.json generated by %s: alg %q, want RS256", who, got)
	}
	if got := key.KeyUsage(); got != "sig" {
		t.Errorf("jwks.json generated by %s: use %q, want sig", who, got)
	}
	var raw any
	if err := key.Raw(&raw); err != nil {
		t.Fatal(err)
	}
	pub, ok := raw.(*rsa.PublicKey)
	if !ok || pub.N.BitLen() != 2048 {
		t.Errorf("jwks.json generated by %s: key %T (%v), want an RSA-2048 public key", who, raw, describeRSA(pub))
	}
	return set, key.KeyID()
}

func describeRSA(pub *rsa.PublicKey) string {
	if pub == nil {
		return "not RSA"
	}
	return fmt.Sprintf("%d bits", pub.N.BitLen())
}

// kubeJWTSVID asks s for an SVID and JWT-SVIDs for workload w the way daprd
// in a pod does (KUBERNETES validator, its pod-bound token; one extra
// audience) and checks them: the certificate chains to anchors, and every
// token is signed with the key kid of set (the ConfigMap's JWKS), for the
// workload's SPIFFE ID, with nbf = iat − allowedClockSkew of the daprsystem
// Configuration. It returns the base token.
func kubeJWTSVID(t testing.TB, s *sentryProc, anchors []byte, cp string, w kubeJWTWorkload, set jwk.Set, kid string) jwtShape {
	t.Helper()
	const extraAud = "api.example.com"
	ca := dialCAAs(t, s, anchors, kubeTrustDomain, mustID(t, "spiffe://"+kubeTrustDomain+"/ns/"+cp+"/dapr-sentry"))
	req := &sentryv1pb.SignCertificateRequest{
		Id:                        w.appID,
		Namespace:                 w.ns,
		CertificateSigningRequest: newCSR(t, genKey(t, keyEd25519)),
		TokenValidator:            sentryv1pb.SignCertificateRequest_KUBERNETES,
		Token:                     w.token,
		JwtAudiences:              []string{extraAud},
	}
	// The validator's pod cache may not hold a just-created pod yet; daprd
	// retries too.
	deadline := time.Now().Add(kubeClientReadyTimeout)
	var resp *sentryv1pb.SignCertificateResponse
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		r, err := ca.SignCertificate(ctx, req)
		cancel()
		if err == nil {
			resp = r
			break
		}
		if !isTransient(err) || time.Now().After(deadline) {
			t.Fatalf("%s: SignCertificate (KUBERNETES validator, app %s/%s) with --jwt-enabled: %v", s.name, w.ns, w.appID, err)
		}
		t.Logf("%s: SignCertificate failed (%v); retrying", s.name, err)
		time.Sleep(time.Second)
	}

	wantID := expectedWorkloadID(w.ns, w.appID)
	verifyLeafChain(t, parsePEMCerts(t, resp.GetWorkloadCertificate()), anchors, "public", wantID)

	if resp.GetJwt() == nil {
		t.Fatalf("%s: --jwt-enabled but no jwt in the response", s.name)
	}
	check := func(name, token, aud string) jwtShape {
		shape := verifyJWT(t, s.name+" "+name, token, set, aud)
		if shape.header["kid"] != kid {
			t.Errorf("%s %s: kid %v, want %q (the ConfigMap's jwks.json)", s.name, name, shape.header["kid"], kid)
		}
		if shape.header["alg"] != "RS256" {
			t.Errorf("%s %s: alg %v, want RS256", s.name, name, shape.header["alg"])
		}
		if shape.claims["sub"] != wantID {
			t.Errorf("%s %s: sub %v, want %s", s.name, name, shape.claims["sub"], wantID)
		}
		iat, _ := shape.claims["iat"].(float64)
		nbf, _ := shape.claims["nbf"].(float64)
		if got := time.Duration(iat-nbf) * time.Second; got != kubeClockSkew {
			t.Errorf("%s %s: iat − nbf = %s, want %s (allowedClockSkew of Configuration %s/daprsystem)", s.name, name, got, kubeClockSkew, cp)
		}
		return shape
	}
	base := check("jwt", resp.GetJwt().GetValue(), "public")
	per := resp.GetPerAudienceJwts()
	for _, aud := range []string{"public", extraAud} {
		tok, ok := per[aud]
		if !ok {
			t.Errorf("%s: no per-audience JWT for %q (have %v)", s.name, aud, keys(per))
			continue
		}
		check("per-audience jwt "+aud, tok.GetValue(), aud)
	}
	t.Logf("%s: JWT-SVID for %s signed with kid %s verifies against the ConfigMap's JWKS", s.name, wantID, kid)
	return base
}
