// Command storm is the Kubernetes start storm: on a real kube-apiserver (tests/kube/cluster), N
// pods with bound tokens all start daprd at once against one Sentry in Kubernetes mode, ours and
// then Dapr's, each on a fresh cluster with the same objects and RBAC; then the same pods start
// again (same tokens) a few seconds later. See README.md.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

type options struct {
	repo, out       string
	oursBin         string
	daprBin         string
	only            string
	pods, daprPods  int
	inflight        int
	waves           int
	daprWaves       int
	gap             time.Duration
	timeout         time.Duration
	daprTimeout     time.Duration
	restartDelay    time.Duration
	restartMax      time.Duration
	check           bool
	healthzDeadline time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.repo, "repo", ".", "repository root")
	flag.StringVar(&o.out, "out", "", "results directory (default target/storm/<time>)")
	flag.StringVar(&o.oursBin, "ours", "target/release/sentry", "our sentry binary")
	flag.StringVar(&o.daprBin, "dapr", "target/dapr/sentry", "Dapr's sentry binary (bench/peer/build)")
	flag.StringVar(&o.only, "only", "", "run one server only: ours or dapr")
	flag.IntVar(&o.pods, "pods", 2000, "pods (sidecars) against ours")
	flag.IntVar(&o.daprPods, "dapr-pods", 0, "pods against Dapr's sentry (default: -pods)")
	flag.IntVar(&o.inflight, "inflight", 500, "sidecars starting at the same time, each on its own connection")
	flag.IntVar(&o.waves, "waves", 2, "waves against ours (the second and later reuse the pods and tokens)")
	flag.IntVar(&o.daprWaves, "dapr-waves", 0, "waves against Dapr's sentry (default: -waves)")
	flag.DurationVar(&o.gap, "gap", 10*time.Second, "pause between waves")
	flag.DurationVar(&o.timeout, "timeout", 5*time.Minute, "time limit of one wave against ours")
	flag.DurationVar(&o.daprTimeout, "dapr-timeout", 15*time.Minute, "time limit of one wave against Dapr's sentry")
	flag.DurationVar(&o.restartDelay, "restart-delay", 10*time.Second, "first pause before a failed daprd starts over, doubled per restart (the kubelet's CrashLoopBackOff)")
	flag.DurationVar(&o.restartMax, "restart-max", 5*time.Minute, "longest pause before a restart")
	flag.DurationVar(&tryTimeout, "try-timeout", tryTimeout, "time limit of one SignCertificate try (daprd: 3 s)")
	flag.BoolVar(&o.check, "check", false, "exit 1 unless every pod is certified with 0 errors, and ours made ≤ 1 API call and ≤ 1 TokenReview per pod in the first wave and 0 TokenReviews later")
	flag.DurationVar(&o.healthzDeadline, "ready-timeout", 2*time.Minute, "time for a Sentry to become healthy")
	flag.Parse()
	if o.daprPods == 0 {
		o.daprPods = o.pods
	}
	if o.daprWaves == 0 {
		o.daprWaves = o.waves
	}
	if err := run(&o); err != nil {
		fmt.Fprintln(os.Stderr, "storm:", err)
		os.Exit(1)
	}
}

func run(o *options) error {
	repo, err := filepath.Abs(o.repo)
	if err != nil {
		return err
	}
	o.repo = repo
	if o.out == "" {
		o.out = filepath.Join(repo, "target", "storm", time.Now().Format("20060102-150405"))
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	type target struct {
		name, bin   string
		pods, waves int
		timeout     time.Duration
	}
	var targets []target
	if o.only != "dapr" {
		targets = append(targets, target{"ours", o.oursBin, o.pods, o.waves, o.timeout})
	}
	if o.only != "ours" {
		targets = append(targets, target{"dapr", o.daprBin, o.daprPods, o.daprWaves, o.daprTimeout})
	}
	if len(targets) == 0 || (o.only != "" && o.only != "ours" && o.only != "dapr") {
		return fmt.Errorf("-only must be ours or dapr, not %q", o.only)
	}
	logf("results in %s", o.out)
	var runs []*serverRun
	for _, t := range targets {
		bin := t.bin
		if !filepath.IsAbs(bin) {
			bin = filepath.Join(repo, bin)
		}
		if st, err := os.Stat(bin); err != nil || st.IsDir() {
			return fmt.Errorf("%s: no binary at %s", t.name, bin)
		}
		r, err := stormOne(o, t.name, bin, t.pods, t.waves, t.timeout)
		if err != nil {
			return fmt.Errorf("%s: %w", t.name, err)
		}
		runs = append(runs, r)
	}
	rep := report{Options: reportOptions{Inflight: o.inflight, Gap: o.gap.String(), RestartDelay: o.restartDelay.String() + " doubling to " + o.restartMax.String(),
		TokenSource: "one TokenRequest per pod (audience " + sentryID + ", " + strconv.Itoa(tokenSeconds) + " s), reused by every wave"},
		Runs: runs}
	rep.print(os.Stdout)
	b, _ := json.MarshalIndent(rep, "", "  ")
	if err := os.WriteFile(filepath.Join(o.out, "results.json"), b, 0o644); err != nil {
		return err
	}
	if o.check {
		if problems := rep.check(); len(problems) > 0 {
			for _, p := range problems {
				fmt.Fprintln(os.Stderr, "storm check FAILED:", p)
			}
			return errors.New("storm check failed")
		}
		logf("storm check passed")
	}
	return nil
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s storm: %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

// stormOne: a fresh cluster, the objects, the server, the waves.
func stormOne(o *options, name, bin string, pods, waves int, timeout time.Duration) (*serverRun, error) {
	dir := filepath.Join(o.out, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	r := &serverRun{Name: name, Binary: bin, Pods: pods}
	t0 := time.Now()
	c, err := clusterUp(o.repo, filepath.Join(dir, "kube"))
	if err != nil {
		return nil, err
	}
	defer c.down()
	r.ClusterUpSeconds = time.Since(t0).Seconds()
	t1 := time.Now()
	kubeconfig, err := controlPlane(c)
	if err != nil {
		return nil, err
	}
	podList, err := workloads(c, pods)
	if err != nil {
		return nil, err
	}
	r.SetupSeconds = time.Since(t1).Seconds()
	logf("%s: cluster up in %.1f s; control plane, %d pods and their tokens in %.1f s",
		name, r.ClusterUpSeconds, pods, r.SetupSeconds)
	apiPID, _ := strconv.Atoi(c.env["APISERVER_PID"])

	before, err := scrapeCalls(c)
	if err != nil {
		return nil, err
	}
	t2 := time.Now()
	srv, err := startServer(name, bin, kubeconfig, dir, o.healthzDeadline)
	if err != nil {
		return nil, err
	}
	defer srv.stop()
	r.ReadySeconds = time.Since(t2).Seconds()
	cm, err := c.configMapData(controlPlaneNS, "dapr-trust-bundle")
	if err != nil {
		return nil, err
	}
	tr, err := newTrust([]byte(cm["ca.crt"]))
	if err != nil {
		return nil, fmt.Errorf("dapr-trust-bundle ConfigMap after start: %w", err)
	}
	prev, err := scrapeCalls(c)
	if err != nil {
		return nil, err
	}
	r.StartupCalls = prev.since(before)
	logf("%s: healthy in %.1f s; start-up API calls: %s", name, r.ReadySeconds, r.StartupCalls.perPod(1))

	for w := 1; w <= waves; w++ {
		if w > 1 {
			time.Sleep(o.gap)
		}
		res, err := measureWave(c, srv, apiPID, tr, podList, o, timeout, prev)
		if err != nil {
			return nil, err
		}
		res.Wave = w
		prev = res.after
		r.Waves = append(r.Waves, res)
		logf("%s wave %d: %d/%d certified in %.2f s, %d errors, %d retries; %s",
			name, w, res.Certified, pods, res.Seconds, res.Errors, res.Retries, res.RequestCalls.perPod(pods))
	}
	return r, nil
}

// measureWave runs one wave with CPU, RSS and API-call accounting around it.
func measureWave(c *cluster, srv *server, apiPID int, tr *trust, pods []pod, o *options,
	timeout time.Duration, before apiCalls) (*waveResult, error) {
	pid := srv.cmd.Process.Pid
	cpu0, err := cpuSeconds(pid)
	if err != nil {
		return nil, err
	}
	api0, _ := cpuSeconds(apiPID)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	res := runWave(ctx, srv.addr, tr, pods, o.inflight, restartBackoff{o.restartDelay, o.restartMax})
	cpu1, err := cpuSeconds(pid)
	if err != nil {
		return nil, fmt.Errorf("%s died during the wave: %w", srv.name, err)
	}
	api1, _ := cpuSeconds(apiPID)
	res.ServerCPUSeconds = cpu1 - cpu0
	res.APIServerCPUSeconds = api1 - api0
	if res.PeakRSSMiB, err = peakRSSMiB(pid); err != nil {
		return nil, err
	}
	after, err := scrapeCalls(c)
	if err != nil {
		return nil, err
	}
	res.after = after
	res.Calls = after.since(before)
	res.TokenReviews = res.Calls.tokenReviews()
	res.RequestCalls, res.BackgroundCalls = res.Calls.split()
	res.RequestCallsTotal = res.RequestCalls.total()
	return res, nil
}
