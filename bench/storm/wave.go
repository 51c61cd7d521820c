package main

// One wave: every pod's daprd starts, `inflight` of them at a time (each slot takes the next pod
// in order and keeps it until it is certified), and the wave ends when all are certified or its
// time is up.

import (
	"context"
	"sort"
	"sync"
	"time"
)

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

func runWave(ctx context.Context, addr string, tr *trust, pods []pod, inflight int, restartDelay time.Duration) *waveResult {
	start := time.Now()
	outcomes := make([]outcome, len(pods))
	next := make(chan int)
	go func() {
		defer close(next)
		for i := range pods {
			select {
			case next <- i:
			case <-ctx.Done():
				return
			}
		}
	}()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var last time.Time
	for w := 0; w < min(inflight, len(pods)); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				outcomes[i] = startSidecar(ctx, addr, tr, &pods[i], restartDelay)
				mu.Lock()
				last = time.Now()
				mu.Unlock()
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
			msg := "not started before the wave's time was up"
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
