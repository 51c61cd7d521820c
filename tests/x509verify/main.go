// Command x509verify is an independent verifier for certificates issued by sentry-rs: it checks a
// PEM chain (leaf first, then intermediates) against PEM trust anchors with Go's crypto/x509 and
// requires the leaf's only URI SAN to equal the expected SPIFFE ID. Standard library only.
package main

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
)

func readCerts(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%s: no certificates", path)
	}
	return certs, nil
}

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: x509verify ANCHORS.pem CHAIN.pem SPIFFE-ID")
		os.Exit(2)
	}
	anchors, err := readCerts(os.Args[1])
	if err != nil {
		fail(err)
	}
	chain, err := readCerts(os.Args[2])
	if err != nil {
		fail(err)
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	for _, a := range anchors {
		roots.AddCert(a)
	}
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	leaf := chain[0]
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}); err != nil {
		fail(err)
	}
	if leaf.IsCA {
		fail(fmt.Errorf("leaf is a CA"))
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != os.Args[3] {
		fail(fmt.Errorf("URI SANs %v, want exactly %s", leaf.URIs, os.Args[3]))
	}
	fmt.Printf("OK %s %s\n", leaf.URIs[0], leaf.SignatureAlgorithm)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "FAIL:", err)
	os.Exit(1)
}
