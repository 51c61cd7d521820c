package main

// The real kube-apiserver (tests/kube/cluster) and an admin REST client for it: JSON over HTTPS
// with the admin client certificate (system:masters), many requests in parallel.

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

type cluster struct {
	repo string
	dir  string
	env  map[string]string
	url  string
	http *http.Client
}

// clusterUp starts a fresh cluster in dir; its watchdog tears it down if this process dies.
func clusterUp(repo, dir string) (*cluster, error) {
	cmd := exec.Command(filepath.Join(repo, "tests", "kube", "cluster"), "up", dir)
	cmd.Env = append(os.Environ(), "KUBE_CLUSTER_WATCH_PID="+strconv.Itoa(os.Getpid()))
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("tests/kube/cluster up %s: %v\n%s", dir, err, out)
	}
	env, err := readEnv(filepath.Join(dir, "env"))
	if err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(env["KUBE_CA_FILE"])
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("no certificate in %s", env["KUBE_CA_FILE"])
	}
	admin, err := tls.LoadX509KeyPair(env["KUBE_ADMIN_CERT"], env["KUBE_ADMIN_KEY"])
	if err != nil {
		return nil, err
	}
	return &cluster{
		repo: repo,
		dir:  dir,
		env:  env,
		url:  strings.TrimRight(env["APISERVER_URL"], "/"),
		http: &http.Client{
			Timeout: 60 * time.Second,
			Transport: &http.Transport{
				TLSClientConfig:     &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{admin}},
				MaxIdleConnsPerHost: setupWorkers,
				ForceAttemptHTTP2:   false,
			},
		},
	}, nil
}

func (c *cluster) down() {
	out, err := exec.Command(filepath.Join(c.repo, "tests", "kube", "cluster"), "down", c.dir).CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "tests/kube/cluster down: %v\n%s", err, out)
	}
}

func readEnv(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	env := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(l), "="); ok && !strings.HasPrefix(k, "#") {
			env[k] = v
		}
	}
	return env, nil
}

// apply server-side applies a YAML file with tests/kube/kctl (waits for CRDs).
func (c *cluster) apply(file string) error {
	out, err := exec.Command(filepath.Join(c.repo, "tests", "kube", "kctl"),
		"--env", filepath.Join(c.dir, "env"), "apply", file).CombinedOutput()
	if err != nil {
		return fmt.Errorf("kctl apply %s: %v\n%s", file, err, out)
	}
	return nil
}

// do performs one admin request; the answer is decoded into out (if not nil). Any status but
// 2xx (or 409 when allowConflict) is an error. Transport errors are retried a few times.
func (c *cluster) do(method, path string, body, out any, allowConflict bool) error {
	var data []byte
	if body != nil {
		var err error
		if data, err = json.Marshal(body); err != nil {
			return err
		}
	}
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		if attempt > 0 {
			time.Sleep(time.Duration(attempt) * 200 * time.Millisecond)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		req, err := http.NewRequestWithContext(ctx, method, c.url+path, bytes.NewReader(data))
		if err != nil {
			cancel()
			return err
		}
		req.Header.Set("Accept", "application/json")
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := c.http.Do(req)
		if err != nil {
			cancel()
			lastErr = err
			continue
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		if err != nil {
			lastErr = err
			continue
		}
		switch {
		case resp.StatusCode == http.StatusTooManyRequests:
			lastErr = fmt.Errorf("HTTP 429")
			continue
		case resp.StatusCode == http.StatusConflict && allowConflict:
			return nil
		case resp.StatusCode < 200 || resp.StatusCode > 299:
			return fmt.Errorf("%s %s: HTTP %d: %s", method, path, resp.StatusCode, b)
		}
		if out != nil {
			return json.Unmarshal(b, out)
		}
		return nil
	}
	return fmt.Errorf("%s %s: %w", method, path, lastErr)
}

// get returns the raw body of a GET (used for /metrics).
func (c *cluster) get(path string) ([]byte, error) {
	resp, err := c.http.Get(c.url + path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s: HTTP %d", path, resp.StatusCode)
	}
	return b, err
}

type meta struct {
	Name        string            `json:"name,omitempty"`
	Namespace   string            `json:"namespace,omitempty"`
	UID         string            `json:"uid,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

func (c *cluster) create(path, apiVersion, kind string, m meta, fields map[string]any) error {
	obj := map[string]any{"apiVersion": apiVersion, "kind": kind, "metadata": m}
	for k, v := range fields {
		obj[k] = v
	}
	return c.do(http.MethodPost, path, obj, nil, true)
}

// tokenRequest issues a service-account token bound to a pod.
func (c *cluster) tokenRequest(ns, sa, pod, uid string, audiences []string, seconds int) (string, error) {
	spec := map[string]any{"audiences": audiences, "expirationSeconds": seconds}
	if pod != "" {
		spec["boundObjectRef"] = map[string]any{"apiVersion": "v1", "kind": "Pod", "name": pod, "uid": uid}
	}
	var resp struct {
		Status struct {
			Token string `json:"token"`
		} `json:"status"`
	}
	err := c.do(http.MethodPost, "/api/v1/namespaces/"+ns+"/serviceaccounts/"+sa+"/token", map[string]any{
		"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec,
	}, &resp, false)
	if err == nil && resp.Status.Token == "" {
		err = fmt.Errorf("TokenRequest for %s/%s returned no token", ns, sa)
	}
	return resp.Status.Token, err
}

// configMapData returns a ConfigMap's data.
func (c *cluster) configMapData(ns, name string) (map[string]string, error) {
	var cm struct {
		Data map[string]string `json:"data"`
	}
	err := c.do(http.MethodGet, "/api/v1/namespaces/"+ns+"/configmaps/"+name, nil, &cm, false)
	return cm.Data, err
}
