package interop

// Extra: SignCertificate status codes for bad requests (reference §3.6), as
// seen through the generated Go stubs. Mirrors Dapr's own integration test
// sentry/validator/insecure.

import (
	"context"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	sentryv1pb "github.com/dapr/dapr/pkg/proto/sentry/v1"
)

func TestSignCertificateErrors(t *testing.T) {
	s := startSentry(t, sentryOpts{})
	ca := dialCA(t, s, s.anchorsPEM(t))
	csr := newCSR(t, genKey(t, keyEd25519))

	ok := func() *sentryv1pb.SignCertificateRequest {
		return &sentryv1pb.SignCertificateRequest{
			Id:                        "myapp",
			Namespace:                 "default",
			CertificateSigningRequest: csr,
			TokenValidator:            sentryv1pb.SignCertificateRequest_INSECURE,
		}
	}
	for _, tc := range []struct {
		name    string
		mutate  func(*sentryv1pb.SignCertificateRequest)
		code    codes.Code
		message string
	}{
		{"validator-unknown-is-default-insecure", func(r *sentryv1pb.SignCertificateRequest) {
			r.TokenValidator = sentryv1pb.SignCertificateRequest_UNKNOWN
		}, codes.OK, ""},
		{"validator-out-of-range", func(r *sentryv1pb.SignCertificateRequest) {
			r.TokenValidator = sentryv1pb.SignCertificateRequest_TokenValidator(-1)
		}, codes.InvalidArgument, "not enabled"},
		{"validator-jwks-not-enabled", func(r *sentryv1pb.SignCertificateRequest) {
			r.TokenValidator = sentryv1pb.SignCertificateRequest_JWKS
		}, codes.InvalidArgument, "not enabled"},
		{"validator-kubernetes-not-enabled", func(r *sentryv1pb.SignCertificateRequest) {
			r.TokenValidator = sentryv1pb.SignCertificateRequest_KUBERNETES
		}, codes.InvalidArgument, "not enabled"},
		{"missing-csr", func(r *sentryv1pb.SignCertificateRequest) {
			r.CertificateSigningRequest = nil
		}, codes.PermissionDenied, "CSR is required"},
		{"missing-namespace", func(r *sentryv1pb.SignCertificateRequest) {
			r.Namespace = ""
		}, codes.PermissionDenied, "namespace is required"},
		{"missing-id", func(r *sentryv1pb.SignCertificateRequest) {
			r.Id = ""
		}, codes.PermissionDenied, "app-id cannot be empty"},
		{"id-with-dot", func(r *sentryv1pb.SignCertificateRequest) {
			r.Id = "my.app"
		}, codes.PermissionDenied, "cannot contain dots"},
		{"not-a-csr-pem", func(r *sentryv1pb.SignCertificateRequest) {
			r.CertificateSigningRequest = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("x")})
		}, codes.InvalidArgument, "invalid certificate signing request"},
		{"csr-garbage-der", func(r *sentryv1pb.SignCertificateRequest) {
			r.CertificateSigningRequest = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte("garbage")})
		}, codes.InvalidArgument, "failed to parse certificate signing request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := ok()
			tc.mutate(req)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := ca.SignCertificate(ctx, req)
			st, _ := status.FromError(err)
			if st.Code() != tc.code {
				t.Fatalf("code = %v (%v), want %v", st.Code(), err, tc.code)
			}
			if tc.message != "" && !strings.Contains(st.Message(), tc.message) {
				t.Errorf("message = %q, want it to contain %q", st.Message(), tc.message)
			}
		})
	}
}
