package main

// kube-apiserver calls by resource and verb: apiserver_request_total from the API server's
// /metrics (scraped with the admin client; the scrape itself is a non-resource request and is
// left out), as deltas between two scrapes.

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// apiCalls maps "resource[/subresource] VERB" (plus the HTTP code when it is not 2xx) to a
// request count.
type apiCalls map[string]float64

func scrapeCalls(c *cluster) (apiCalls, error) {
	b, err := c.get("/metrics")
	if err != nil {
		return nil, err
	}
	calls := apiCalls{}
	for _, line := range strings.Split(string(b), "\n") {
		rest, ok := strings.CutPrefix(line, "apiserver_request_total{")
		if !ok {
			continue
		}
		labelText, value, ok := strings.Cut(rest, "} ")
		if !ok {
			return nil, fmt.Errorf("unparsed metric line %q", line)
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			return nil, fmt.Errorf("metric line %q: %v", line, err)
		}
		labels := map[string]string{}
		for _, kv := range strings.Split(labelText, ",") {
			if k, val, ok := strings.Cut(kv, "="); ok {
				labels[k] = strings.Trim(val, `"`)
			}
		}
		if labels["resource"] == "" {
			continue
		}
		key := labels["resource"]
		if labels["subresource"] != "" {
			key += "/" + labels["subresource"]
		}
		key += " " + labels["verb"]
		if code := labels["code"]; code != "" && code[0] != '2' {
			key += " " + code // failed calls apart: "tokenreviews POST 504"
		}
		calls[key] += v
	}
	return calls, nil
}

// since returns the calls made after earlier (keys with no new calls are dropped).
func (a apiCalls) since(earlier apiCalls) apiCalls {
	d := apiCalls{}
	for k, v := range a {
		if n := v - earlier[k]; n > 0 {
			d[k] = n
		}
	}
	return d
}

func (a apiCalls) total() float64 {
	var t float64
	for _, v := range a {
		t += v
	}
	return t
}

// background is what a server does by the clock, not per request: its trust-bundle checks
// (Secret and ConfigMap dapr-trust-bundle) and the API server's own leases; and every WATCH
// (long-running, counted when it ends: the informers' and the API server's own re-watches).
var background = map[string]bool{"secrets": true, "configmaps": true, "leases": true}

// split separates the calls made for requests (TokenReviews, pods, Configurations, anything
// else) from the background ones.
func (a apiCalls) split() (perRequest, clock apiCalls) {
	perRequest, clock = apiCalls{}, apiCalls{}
	for k, v := range a {
		resource, _, _ := strings.Cut(k, " ")
		resource, _, _ = strings.Cut(resource, "/")
		if background[resource] || strings.HasSuffix(k, " WATCH") {
			clock[k] = v
		} else {
			perRequest[k] = v
		}
	}
	return perRequest, clock
}

// tokenReviews counts TokenReview creates, failed ones included.
func (a apiCalls) tokenReviews() float64 {
	var n float64
	for k, v := range a {
		if strings.HasPrefix(k, "tokenreviews POST") {
			n += v
		}
	}
	return n
}

// perPod lists the calls per pod, most first: "tokenreviews POST 1.000/pod (2000)".
func (a apiCalls) perPod(pods int) string {
	keys := make([]string, 0, len(a))
	for k := range a {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if a[keys[i]] != a[keys[j]] {
			return a[keys[i]] > a[keys[j]]
		}
		return keys[i] < keys[j]
	})
	if len(keys) == 0 {
		return "none"
	}
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %.3f/pod (%.0f)", k, a[k]/float64(pods), a[k])
	}
	return strings.Join(parts, ", ")
}
