package main

// One wave: every pod's daprd starts, `inflight` of them at a time: a slot takes the next pod
// from a queue for one daprd run (a connection and up to five tries); a pod whose run failed
// goes back in the queue after the kubelet's restart back-off, and its slot takes the next pod.
// The wave ends when all are certified or its time is up.

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// progressEvery is how often a running wave says how far it is.
const progressEvery = 30 * time.Second

// progress logs how many pods are done every progressEvery until the returned stop is called.
func progress(n int, finished *atomic.Int64, start time.Time) (stop func()) {
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(progressEvery)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				logf("%d of %d pods done after %.0f s", finished.Load(), n, time.Since(start).Seconds())
			}
		}
	}()
	return func() { close(done) }
}

type waveResult struct {
	Wave                int            `json:"wave"`
	Certified           int            `json:"certified"`
	Errors              int            `json:"errors"`
	ErrorSamples        []string       `json:"error_samples,omitempty"`
	Requests            int            `json:"requests"`
	Retries             int            `json:"retries"`
	Restarts            int            `json:"daprd_restarts"`
	FirstTry            int            `json:"certified_on_first_request"`
	Failures            map[string]int `json:"failed_requests_by_status,omitempty"`
	Seconds             float64        `json:"seconds_until_all_certified"`
	P50ms               float64        `json:"p50_ms"`
	P99ms               float64        `json:"p99_ms"`
	MaxMs               float64        `json:"max_ms"`
	ServerCPUSeconds    float64        `json:"server_cpu_seconds"`
	APIServerCPUSeconds float64        `json:"kube_apiserver_cpu_seconds"`
	PeakRSSMiB          float64        `json:"server_peak_rss_mib"`
	Calls               apiCalls       `json:"apiserver_calls"`
	RequestCalls        apiCalls       `json:"apiserver_calls_for_requests"`
	BackgroundCalls     apiCalls       `json:"apiserver_calls_background"`
	RequestCallsTotal   float64        `json:"apiserver_calls_for_requests_total"`
	TokenReviews        float64        `json:"tokenreviews"`
	after               apiCalls
}

// restartBackoff is the kubelet's CrashLoopBackOff: first, doubling, at most max.
type restartBackoff struct{ first, max time.Duration }

func (b restartBackoff) after(restarts int) time.Duration {
	d := b.first
	for i := 1; i < restarts && d < b.max; i++ {
		d *= 2
	}
	return min(d, b.max)
}

func runWave(ctx context.Context, addr string, tr *trust, pods []pod, inflight int, backoff restartBackoff) *waveResult {
	start := time.Now()
	outcomes := make([]outcome, len(pods))
	firstRequest := make([]time.Time, len(pods))
	// Pods waiting for a slot, in order; a restarted daprd joins the end after its back-off.
	// Each pod is in it at most once, so a send never blocks.
	queue := make(chan int, len(pods))
	for i := range pods {
		queue <- i
	}
	var mu sync.Mutex
	var last time.Time
	var finished atomic.Int64
	allDone := make(chan struct{})
	stopProgress := progress(len(pods), &finished, start)
	defer stopProgress()
	var wg sync.WaitGroup
	for w := 0; w < min(inflight, len(pods)); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				var i int
				select {
				case i = <-queue:
				case <-allDone:
					return
				case <-ctx.Done():
					return
				}
				oc := &outcomes[i]
				if oc.requests == 0 {
					firstRequest[i] = time.Now()
				}
				done, err := requestSVID(ctx, addr, tr, &pods[i], oc)
				switch {
				case done:
					oc.latency, oc.certified, oc.err = time.Since(firstRequest[i]), err == nil, err
					mu.Lock()
					last = time.Now()
					mu.Unlock()
					if finished.Add(1) == int64(len(pods)) {
						close(allDone)
					}
				case ctx.Err() == nil:
					oc.restarts++
					time.AfterFunc(backoff.after(oc.restarts), func() { queue <- i })
				}
			}
		}()
	}
	wg.Wait()

	res := &waveResult{Failures: map[string]int{}}
	var lat []float64
	for i := range outcomes {
		oc := &outcomes[i]
		res.Requests += oc.requests
		if oc.requests > 1 {
			res.Retries += oc.requests - 1
		}
		res.Restarts += oc.restarts
		for k, n := range oc.failures {
			res.Failures[k] += n
		}
		if oc.certified {
			res.Certified++
			lat = append(lat, float64(oc.latency.Microseconds())/1000)
			if oc.requests == 1 {
				res.FirstTry++
			}
			continue
		}
		res.Errors++
		if len(res.ErrorSamples) < 5 {
			msg := fmt.Sprintf("not certified when the wave's time was up (%d requests, %d restarts)", oc.requests, oc.restarts)
			if oc.err != nil {
				msg = oc.err.Error()
			}
			res.ErrorSamples = append(res.ErrorSamples, pods[i].name+": "+msg)
		}
	}
	// Until the last pod finished; when time ran out with pods left, the whole time limit.
	res.Seconds = last.Sub(start).Seconds()
	if last.IsZero() || (ctx.Err() != nil && res.Certified < len(pods)) {
		res.Seconds = time.Since(start).Seconds()
	}
	sort.Float64s(lat)
	res.P50ms, res.P99ms = percentile(lat, 0.50), percentile(lat, 0.99)
	if len(lat) > 0 {
		res.MaxMs = lat[len(lat)-1]
	}
	return res
}

// percentile of sorted values (nearest rank).
func percentile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}
