package main

// What exists before Sentry starts, as Dapr's Helm chart and injector leave it: the control-plane
// namespace with deploy/rbac.yaml, the daprsystem Configuration, the empty dapr-trust-bundle
// Secret and ConfigMap; and the workload side: N Pods (API objects only, nothing runs them) with
// the injector's dapr.io annotations, each with a TokenRequest bound to it for the audience the
// injector projects (Sentry's SPIFFE ID, 7200 s).

import (
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
)

const (
	controlPlaneNS = "dapr-system"
	trustDomain    = "cluster.local"
	workloadNS     = "storm"
	workloadSA     = "storm-app"
	workloadConfig = "storm-config"
	// Parallel API requests while creating pods and tokens.
	setupWorkers = 32
	// What pkg/injector/patcher/sidecar_volumes.go projects into daprd.
	tokenSeconds = 7200
)

var sentryID = "spiffe://" + trustDomain + "/ns/" + controlPlaneNS + "/dapr-sentry"

type pod struct {
	name, uid, appID, token string
}

// controlPlane creates the Sentry namespace, RBAC, Configuration and the chart's empty
// trust-bundle objects, and returns a kubeconfig holding a dapr-sentry ServiceAccount token.
func controlPlane(c *cluster) (string, error) {
	if err := c.create("/api/v1/namespaces", "v1", "Namespace", meta{Name: controlPlaneNS}, nil); err != nil {
		return "", err
	}
	for _, f := range []string{"deploy/crds/configuration.yaml", "deploy/rbac.yaml"} {
		if err := c.apply(filepath.Join(c.repo, f)); err != nil {
			return "", err
		}
	}
	// The chart's daprsystem Configuration with its mTLS defaults.
	if err := c.create("/apis/dapr.io/v1alpha1/namespaces/"+controlPlaneNS+"/configurations",
		"dapr.io/v1alpha1", "Configuration", meta{Name: "daprsystem"}, map[string]any{
			"spec": map[string]any{"mtls": map[string]any{
				"enabled": true, "workloadCertTTL": "24h", "allowedClockSkew": "15m",
			}},
		}); err != nil {
		return "", err
	}
	// charts/dapr/charts/dapr_sentry/templates/dapr_sentry_deployment.yaml without user certs.
	label := map[string]string{"app": "dapr-sentry"}
	for kind, res := range map[string]string{"Secret": "secrets", "ConfigMap": "configmaps"} {
		if err := c.create("/api/v1/namespaces/"+controlPlaneNS+"/"+res, "v1", kind,
			meta{Name: "dapr-trust-bundle", Labels: label}, nil); err != nil {
			return "", err
		}
	}
	token, err := c.tokenRequest(controlPlaneNS, "dapr-sentry", "", "", nil, 4*3600)
	if err != nil {
		return "", err
	}
	caPEM, err := os.ReadFile(c.env["KUBE_CA_FILE"])
	if err != nil {
		return "", err
	}
	kubeconfig := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: storm
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: dapr-sentry
  user:
    token: %s
contexts:
- name: storm
  context: {cluster: storm, user: dapr-sentry, namespace: %s}
current-context: storm
`, c.url, base64.StdEncoding.EncodeToString(caPEM), token, controlPlaneNS)
	path := filepath.Join(c.dir, "sentry.kubeconfig")
	return path, os.WriteFile(path, []byte(kubeconfig), 0o600)
}

// workloads creates the namespace, service account, Configuration and n pods, then one
// pod-bound token per pod, setupWorkers requests at a time.
func workloads(c *cluster, n int) ([]pod, error) {
	if err := c.create("/api/v1/namespaces", "v1", "Namespace", meta{Name: workloadNS}, nil); err != nil {
		return nil, err
	}
	if err := c.create("/api/v1/namespaces/"+workloadNS+"/serviceaccounts", "v1", "ServiceAccount",
		meta{Name: workloadSA}, nil); err != nil {
		return nil, err
	}
	if err := c.create("/apis/dapr.io/v1alpha1/namespaces/"+workloadNS+"/configurations",
		"dapr.io/v1alpha1", "Configuration", meta{Name: workloadConfig}, map[string]any{"spec": map[string]any{}}); err != nil {
		return nil, err
	}
	pods := make([]pod, n)
	for i := range pods {
		pods[i] = pod{name: fmt.Sprintf("storm-%05d", i), appID: fmt.Sprintf("app-%05d", i)}
	}
	err := parallel(n, func(i int) error {
		p := &pods[i]
		var created struct {
			Metadata meta `json:"metadata"`
		}
		err := c.do("POST", "/api/v1/namespaces/"+workloadNS+"/pods", map[string]any{
			"apiVersion": "v1", "kind": "Pod",
			"metadata": meta{Name: p.name, Labels: map[string]string{"app": p.appID}, Annotations: map[string]string{
				"dapr.io/enabled": "true", "dapr.io/app-id": p.appID, "dapr.io/config": workloadConfig,
			}},
			"spec": map[string]any{
				"serviceAccountName": workloadSA,
				"containers":         []any{map[string]any{"name": "app", "image": "example.invalid/app:1"}},
			},
		}, &created, false)
		if err == nil && created.Metadata.UID == "" {
			err = fmt.Errorf("pod %s created without a UID", p.name)
		}
		p.uid = created.Metadata.UID
		return err
	})
	if err != nil {
		return nil, err
	}
	return pods, issueTokens(c, pods)
}

// issueTokens gives every pod a fresh bound token.
func issueTokens(c *cluster, pods []pod) error {
	return parallel(len(pods), func(i int) error {
		p := &pods[i]
		t, err := c.tokenRequest(workloadNS, workloadSA, p.name, p.uid, []string{sentryID}, tokenSeconds)
		p.token = t
		return err
	})
}

// parallel runs fn(0..n-1) on setupWorkers goroutines; the first error wins.
func parallel(n int, fn func(int) error) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for w := 0; w < setupWorkers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := fn(i); err != nil {
					once.Do(func() { first = err })
					next.Store(int64(n))
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}
