package main

// The report (a Markdown summary on stdout, results.json) and the smoke's pass/fail rules, which
// are about counts only, never times.

import (
	"fmt"
	"io"
	"sort"
	"strings"
)

type serverRun struct {
	Name             string        `json:"server"`
	Binary           string        `json:"binary"`
	Pods             int           `json:"pods"`
	ClusterUpSeconds float64       `json:"cluster_up_seconds"`
	SetupSeconds     float64       `json:"setup_seconds"`
	ReadySeconds     float64       `json:"start_to_healthy_seconds"`
	StartupCalls     apiCalls      `json:"startup_apiserver_calls"`
	Waves            []*waveResult `json:"waves"`
}

type reportOptions struct {
	Inflight     int    `json:"inflight"`
	Gap          string `json:"gap_between_waves"`
	RestartDelay string `json:"daprd_restart_delay"`
	TokenSource  string `json:"tokens"`
}

type report struct {
	Options reportOptions `json:"options"`
	Runs    []*serverRun  `json:"runs"`
}

func (r *report) print(w io.Writer) {
	fmt.Fprintf(w, "\n## Kubernetes start storm (%d in flight, each on its own TLS connection; daprd restarts after %s; waves %s apart; %s)\n\n",
		r.Options.Inflight, r.Options.RestartDelay, r.Options.Gap, r.Options.TokenSource)
	fmt.Fprintln(w, "| server | pods | wave | certified | errors | retries | restarts | 1st try | all certified s | p50 ms | p99 ms | server CPU s | apiserver CPU s | peak RSS MiB | TokenReviews/pod | API calls/pod (requests) |")
	fmt.Fprintln(w, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
	for _, run := range r.Runs {
		for _, wv := range run.Waves {
			n := float64(run.Pods)
			fmt.Fprintf(w, "| %s | %d | %d | %d | %d | %d | %d | %d | %.2f | %.0f | %.0f | %.2f | %.2f | %.1f | %.3f | %.3f |\n",
				run.Name, run.Pods, wv.Wave, wv.Certified, wv.Errors, wv.Retries, wv.Restarts, wv.FirstTry,
				wv.Seconds, wv.P50ms, wv.P99ms, wv.ServerCPUSeconds, wv.APIServerCPUSeconds, wv.PeakRSSMiB,
				wv.TokenReviews/n, wv.RequestCallsTotal/n)
		}
	}
	fmt.Fprintln(w)
	for _, run := range r.Runs {
		fmt.Fprintf(w, "- %s: cluster up %.1f s, setup (control plane + %d pods + tokens) %.1f s, start to healthy %.1f s; start-up API calls: %s\n",
			run.Name, run.ClusterUpSeconds, run.Pods, run.SetupSeconds, run.ReadySeconds, run.StartupCalls.perPod(1))
		for _, wv := range run.Waves {
			fmt.Fprintf(w, "  - wave %d API calls for requests: %s; in the background (trust-bundle checks, leases, watches): %s\n",
				wv.Wave, wv.RequestCalls.perPod(run.Pods), wv.BackgroundCalls.perPod(run.Pods))
			if len(wv.Failures) > 0 {
				fmt.Fprintf(w, "  - wave %d failed requests: %s\n", wv.Wave, failureList(wv.Failures))
			}
			for _, e := range wv.ErrorSamples {
				fmt.Fprintf(w, "  - wave %d error: %s\n", wv.Wave, e)
			}
		}
	}
	if ours, dapr := r.find("ours"), r.find("dapr"); ours != nil && dapr != nil && len(ours.Waves) > 0 && len(dapr.Waves) > 0 {
		o, d := ours.Waves[0], dapr.Waves[0]
		// Certificates per second, so that runs of different sizes or an unfinished Dapr run compare.
		or, dr := float64(o.Certified)/o.Seconds, float64(d.Certified)/d.Seconds
		fmt.Fprintf(w, "\nFirst wave: ours %d pods in %.2f s (%.1f/s), Dapr's %d of %d in %.1f s (%.2f/s): %.0f× the rate",
			o.Certified, o.Seconds, or, d.Certified, dapr.Pods, d.Seconds, dr, or/dr)
		if ours.Pods == dapr.Pods && d.Certified == dapr.Pods && o.Certified == ours.Pods {
			fmt.Fprintf(w, "; time ratio %.0f×", d.Seconds/o.Seconds)
		}
		fmt.Fprintln(w)
	}
}

func (r *report) find(name string) *serverRun {
	for _, run := range r.Runs {
		if run.Name == name {
			return run
		}
	}
	return nil
}

func failureList(f map[string]int) string {
	keys := make([]string, 0, len(f))
	for k := range f {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return f[keys[i]] > f[keys[j]] })
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%d× %s", f[k], k))
	}
	return strings.Join(parts, "; ")
}

// check returns what breaks the smoke's rules: every pod certified with no error on every
// server; ours at most one API call for requests and one TokenReview per pod in the first wave,
// and no TokenReview (and still at most one call per pod) in every later wave. Background calls
// go by the clock, so they are reported, not counted against the pods.
func (r *report) check() []string {
	var problems []string
	for _, run := range r.Runs {
		n := float64(run.Pods)
		for _, wv := range run.Waves {
			where := fmt.Sprintf("%s wave %d", run.Name, wv.Wave)
			if wv.Certified != run.Pods || wv.Errors != 0 {
				problems = append(problems, fmt.Sprintf("%s: %d of %d certified, %d errors %v", where, wv.Certified, run.Pods, wv.Errors, wv.ErrorSamples))
			}
			if run.Name != "ours" {
				continue
			}
			if wv.RequestCallsTotal > n {
				problems = append(problems, fmt.Sprintf("%s: %.0f API calls for %d pods: %s", where, wv.RequestCallsTotal, run.Pods, wv.RequestCalls.perPod(run.Pods)))
			}
			if wv.Wave == 1 && wv.TokenReviews > n {
				problems = append(problems, fmt.Sprintf("%s: %.0f TokenReviews for %d pods", where, wv.TokenReviews, run.Pods))
			}
			if wv.Wave > 1 && wv.TokenReviews != 0 {
				problems = append(problems, fmt.Sprintf("%s: %.0f TokenReviews with the same tokens (want 0: the review cache)", where, wv.TokenReviews))
			}
		}
	}
	return problems
}
