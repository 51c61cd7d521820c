// Command goload is a daprd-like load generator for a Dapr Sentry (ours or Dapr's).
//
// Each simulated sidecar asks for its X.509 SVID the way daprd does (dapr/dapr v1.18.3
// pkg/security, newRequestFn): grpc.DialContext with go-spiffe's grpccredentials over Dapr's
// static trust anchors, the Sentry's SPIFFE ID from security.SentryID authorised, blocking dial
// (WithReturnConnectionError), a sentry/v1 SignCertificate with a PEM CSR built like
// dapr/kit's spiffe package (x509.CreateCertificateRequest on an empty template), the returned
// chain decoded with dapr/kit's PEM helper, then conn.Close (GOAWAY). Everything else is grpc-go's
// and crypto/tls's defaults, as in daprd: X25519MLKEM768 offered first, HTTP/2 settings, window
// updates and BDP pings as grpc-go sends them.
//
// Modes: -mode new (a connection per request, as daprd) or reuse (one connection per sidecar,
// dialled before the timed window); closed loop (each sidecar sends when its last answer came)
// or open loop (-rate: fixed total arrival rate; latency is measured from the intended send
// time, so a stalled server cannot hide its queue: no coordinated omission).
//
// Each answer's latency is split into parts: late (the client started it after its intended
// time: the client's own queue), then in mode new tcp (until the TLS handshake starts), tls (the
// handshake, timed around the transport credentials' ClientHandshake) and h2 (until grpc-go has
// the connection ready: the HTTP/2 prefaces), and rpc (SignCertificate). The report gives each
// part's mean over the slowest 1 % of answers and when the first and the last of them were meant
// to be sent, so a tail can be told apart by where it waited and a stall from a spread tail.
//
// With -server-pid it reads the server's utime+stime from /proc/PID/stat around the timed window
// and reports server CPU µs per certificate, and samples it every 10 ms to report the server's
// busiest 100 ms. -json prints one JSON object with the same fields as sentry-load's -json (plus
// client, server_cpu_*, server_busiest_100ms, key_exchange). -strict exits 1 on any error.
package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffegrpc/grpccredentials"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	sentryv1pb "github.com/dapr/dapr/pkg/proto/sentry/v1"
	"github.com/dapr/dapr/pkg/security"
	cryptopem "github.com/dapr/kit/crypto/pem"
	"github.com/dapr/kit/crypto/spiffe/trustanchors/static"
)

type options struct {
	addr, anchors, key, mode, ns, cpTD, cpNS string
	sidecars, requests, serverPID            int
	duration, timeout                        time.Duration
	rate                                     float64
	jsonOut, strict                          bool
}

func parseFlags() options {
	var o options
	flag.StringVar(&o.addr, "addr", "127.0.0.1:50001", "Sentry gRPC address")
	flag.StringVar(&o.anchors, "anchors", "", "trust anchors PEM (the bundle's ca.crt)")
	flag.StringVar(&o.key, "key", "ed25519", "CSR key: ed25519 (daprd's default) or p256")
	flag.StringVar(&o.mode, "mode", "new", "new: a TLS connection per request (daprd); reuse: one per sidecar")
	flag.StringVar(&o.ns, "namespace", "default", "request namespace")
	flag.StringVar(&o.cpTD, "control-plane-trust-domain", "localhost", "trust domain of the Sentry's SPIFFE ID")
	flag.StringVar(&o.cpNS, "control-plane-namespace", "dapr-system", "namespace of the Sentry's SPIFFE ID")
	flag.IntVar(&o.sidecars, "sidecars", 1, "simulated sidecars (each has at most one request in flight)")
	flag.IntVar(&o.requests, "requests", 0, "stop after this many requests in total (0: run for -duration)")
	flag.IntVar(&o.serverPID, "server-pid", 0, "server process whose CPU time is read around the run")
	flag.DurationVar(&o.duration, "duration", 5*time.Second, "timed window")
	flag.DurationVar(&o.timeout, "timeout", 3*time.Second, "per request, dial included (daprd: 3s per attempt)")
	flag.Float64Var(&o.rate, "rate", 0, "open loop: total arrival rate per second (0: closed loop)")
	flag.BoolVar(&o.jsonOut, "json", false, "print one JSON report")
	flag.BoolVar(&o.strict, "strict", false, "exit 1 if any request failed or none succeeded")
	flag.Parse()
	return o
}

func main() {
	o := parseFlags()
	rep, err := run(o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "goload:", err)
		os.Exit(2)
	}
	if o.jsonOut {
		out, _ := json.Marshal(rep)
		fmt.Println(string(out))
	} else {
		rep.print(os.Stdout)
	}
	if o.strict && (rep.Errors > 0 || rep.OK == 0) {
		fmt.Fprintf(os.Stderr, "goload: %d errors, %d certificates (strict)\n", rep.Errors, rep.OK)
		os.Exit(1)
	}
}

// client holds what every sidecar shares: the transport credentials, as daprd builds them.
type client struct {
	addr    string
	creds   credentials.TransportCredentials
	timeout time.Duration
}

func newClient(o options) (*client, error) {
	pemBytes, err := os.ReadFile(o.anchors)
	if err != nil {
		return nil, err
	}
	anchors, err := static.From(static.Options{Anchors: pemBytes})
	if err != nil {
		return nil, err
	}
	td, err := spiffeid.TrustDomainFromString(o.cpTD)
	if err != nil {
		return nil, err
	}
	sentryID, err := security.SentryID(td, o.cpNS)
	if err != nil {
		return nil, err
	}
	return &client{
		addr:    o.addr,
		creds:   grpccredentials.TLSClientCredentials(anchors, tlsconfig.AuthorizeID(sentryID)),
		timeout: o.timeout,
	}, nil
}

// timedCreds are daprd's transport credentials with the client TLS handshake timed (one sidecar's:
// it has at most one dial at a time). Everything else is the wrapped credentials'.
type timedCreds struct {
	credentials.TransportCredentials
	start, end *atomic.Pointer[time.Time] // monotonic readings, like the caller's
}

func newTimedCreds(inner credentials.TransportCredentials) *timedCreds {
	return &timedCreds{inner, new(atomic.Pointer[time.Time]), new(atomic.Pointer[time.Time])}
}

func (t *timedCreds) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	start := time.Now()
	t.start.Store(&start)
	conn, ai, err := t.TransportCredentials.ClientHandshake(ctx, authority, raw)
	end := time.Now()
	t.end.Store(&end)
	return conn, ai, err
}

func (t *timedCreds) Clone() credentials.TransportCredentials {
	return &timedCreds{t.TransportCredentials.Clone(), t.start, t.end}
}

func (c *client) dial(ctx context.Context, creds credentials.TransportCredentials) (*grpc.ClientConn, error) {
	return grpc.DialContext(ctx, c.addr, //nolint:staticcheck // daprd's call
		grpc.WithTransportCredentials(creds),
		grpc.WithReturnConnectionError(), //nolint:staticcheck // daprd's option
	)
}

// sidecar is one simulated daprd: its app ID, its CSR and (mode reuse) its connection.
type sidecar struct {
	req   *sentryv1pb.SignCertificateRequest
	creds *timedCreds
	conn  *grpc.ClientConn
	t     tally
}

func newCSR(kind string) ([]byte, error) {
	var key crypto.Signer
	var err error
	switch kind {
	case "ed25519":
		_, key, err = ed25519.GenerateKey(rand.Reader)
	case "p256":
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	default:
		return nil, fmt.Errorf("unknown -key %q (ed25519 or p256)", kind)
	}
	if err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, new(x509.CertificateRequest), key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// sign runs one request; in mode new it dials and closes its own connection, as daprd does.
func (s *sidecar) sign(c *client, intended time.Time) {
	begin := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	conn, dialled := s.conn, begin
	var tcp, hs, h2 time.Duration
	if conn == nil {
		var err error
		conn, err = c.dial(ctx, s.creds)
		if err != nil {
			s.t.fail(classify("connect", err), err)
			return
		}
		defer conn.Close()
		dialled = time.Now()
		if hsStart, hsEnd := s.creds.start.Load(), s.creds.end.Load(); hsStart != nil && hsEnd != nil {
			tcp, hs, h2 = hsStart.Sub(begin), hsEnd.Sub(*hsStart), dialled.Sub(*hsEnd)
		} else {
			tcp = dialled.Sub(begin) // no handshake reading: the whole dial counts as tcp
		}
	}
	var p peer.Peer
	resp, err := sentryv1pb.NewCAClient(conn).SignCertificate(ctx, s.req, grpc.Peer(&p))
	if err != nil {
		s.t.fail(classify("rpc", err), err)
		return
	}
	if err := resp.GetValidUntil().CheckValid(); err != nil {
		s.t.fail("verify", err)
		return
	}
	certs, err := cryptopem.DecodePEMCertificates(resp.GetWorkloadCertificate())
	if err != nil || len(certs) < 2 {
		s.t.fail("verify", fmt.Errorf("workload chain: %d certificates, %v", len(certs), err))
		return
	}
	s.t.ok(parts{begin.Sub(intended), tcp, hs, h2, time.Since(dialled), intended}, keyExchange(p.AuthInfo))
}

// keyExchange names the TLS version and key exchange of a call's connection. go-spiffe wraps
// grpc's TLSInfo in an unexported type that embeds it, hence the reflection.
func keyExchange(ai credentials.AuthInfo) string {
	if v := reflect.ValueOf(ai); v.Kind() == reflect.Struct {
		if f := v.FieldByName("AuthInfo"); f.IsValid() && f.CanInterface() {
			ai, _ = f.Interface().(credentials.AuthInfo)
		}
	}
	if ti, ok := ai.(credentials.TLSInfo); ok {
		return tls.VersionName(ti.State.Version) + " " + ti.State.CurveID.String()
	}
	return "unknown"
}

func classify(stage string, err error) string {
	if errors.Is(err, context.DeadlineExceeded) {
		return "timeout"
	}
	if st, ok := status.FromError(err); ok && stage == "rpc" {
		return st.Code().String()
	}
	return stage
}

// parts is one answer's latency, late + tcp + tls + h2 + rpc, and when it was meant to be sent.
type parts struct {
	late, tcp, tls, h2, rpc time.Duration
	intended                time.Time
}

func (p parts) total() time.Duration { return p.late + p.tcp + p.tls + p.h2 + p.rpc }

// tally is what one sidecar saw.
type tally struct {
	lat      []parts
	errors   map[string]uint64
	examples map[string]string
	kx       map[string]uint64
}

func (t *tally) ok(d parts, kx string) {
	t.lat = append(t.lat, d)
	if t.kx == nil {
		t.kx = map[string]uint64{}
	}
	t.kx[kx]++
}

func (t *tally) fail(kind string, err error) {
	if t.errors == nil {
		t.errors, t.examples = map[string]uint64{}, map[string]string{}
	}
	t.errors[kind]++
	if _, ok := t.examples[kind]; !ok {
		msg := err.Error()
		if len(msg) > 300 {
			msg = msg[:300]
		}
		t.examples[kind] = msg
	}
}

func run(o options) (*report, error) {
	if o.sidecars < 1 {
		return nil, errors.New("-sidecars must be ≥ 1")
	}
	if o.mode != "new" && o.mode != "reuse" {
		return nil, fmt.Errorf("unknown -mode %q (new or reuse)", o.mode)
	}
	c, err := newClient(o)
	if err != nil {
		return nil, err
	}
	cars := make([]*sidecar, o.sidecars)
	for i := range cars {
		csr, err := newCSR(o.key)
		if err != nil {
			return nil, err
		}
		cars[i] = &sidecar{creds: newTimedCreds(c.creds), req: &sentryv1pb.SignCertificateRequest{
			CertificateSigningRequest: csr,
			Id:                        "goload-" + strconv.Itoa(i),
			Namespace:                 o.ns,
		}}
		if o.mode == "reuse" {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			cars[i].conn, err = c.dial(ctx, cars[i].creds)
			cancel()
			if err != nil {
				return nil, fmt.Errorf("dialling sidecar %d: %w", i, err)
			}
		}
	}
	defer func() {
		for _, s := range cars {
			if s.conn != nil {
				s.conn.Close()
			}
		}
	}()

	cpu0, err := serverCPU(o.serverPID)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	deadline := start.Add(o.duration)
	watch := watchServer(o.serverPID, start, deadline)
	var dropped uint64
	if o.rate > 0 {
		dropped = openLoop(c, cars, o, start, deadline)
	} else {
		closedLoop(c, cars, o, deadline)
	}
	elapsed := time.Since(start)
	cpu1, err := serverCPU(o.serverPID)
	if err != nil {
		return nil, err
	}
	r := newReport(o, cars, start, elapsed, dropped, cpu0, cpu1)
	r.ServerBusiest = <-watch
	return r, nil
}

func closedLoop(c *client, cars []*sidecar, o options, deadline time.Time) {
	var sent atomic.Int64
	var wg sync.WaitGroup
	for _, s := range cars {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				if o.requests > 0 && sent.Add(1) > int64(o.requests) {
					return
				}
				s.sign(c, time.Now())
			}
		})
	}
	wg.Wait()
}

// openLoop schedules requests at o.rate per second from start to deadline; a free sidecar takes
// the next one. Latency counts from the intended send time. Requests still queued two request
// timeouts after the deadline are dropped (counted as errors, not sent).
func openLoop(c *client, cars []*sidecar, o options, start, deadline time.Time) uint64 {
	total := int(o.rate * o.duration.Seconds())
	if o.requests > 0 {
		total = min(total, o.requests)
	}
	jobs := make(chan time.Time, total)
	cutoff := deadline.Add(2 * o.timeout)
	var dropped atomic.Uint64
	var wg sync.WaitGroup
	for _, s := range cars {
		wg.Go(func() {
			for t := range jobs {
				if time.Now().After(cutoff) {
					dropped.Add(1)
					continue
				}
				s.sign(c, t)
			}
		})
	}
	interval := time.Duration(float64(time.Second) / o.rate)
	for i := range total {
		t := start.Add(time.Duration(i) * interval)
		if d := time.Until(t); d > 0 {
			time.Sleep(d)
		}
		jobs <- t
	}
	close(jobs)
	wg.Wait()
	return dropped.Load()
}

// busiest is the highest share of one core the server used over any 100 ms of the timed window,
// and when that window began (seconds into the run).
type busiest struct {
	Share float64 `json:"share"`
	AtS   float64 `json:"at_s"`
}

// watchServer reads the server's CPU time every 10 ms from start to deadline and sends its busiest
// 100 ms (nil without a pid or when a reading fails): it tells a stall of the whole machine (the
// client's own queue grows, the server is not busier) from a burst of the server's own work.
func watchServer(pid int, start, deadline time.Time) <-chan *busiest {
	out := make(chan *busiest, 1)
	if pid == 0 {
		out <- nil
		return out
	}
	go func() {
		type sample struct {
			at    time.Duration
			ticks int64
		}
		var samples []sample
		for now := time.Now(); now.Before(deadline); now = time.Now() {
			ticks, err := serverCPU(pid)
			if err != nil {
				out <- nil
				return
			}
			samples = append(samples, sample{now.Sub(start), ticks})
			time.Sleep(10 * time.Millisecond)
		}
		var best *busiest
		j := 0
		for i, a := range samples {
			for j < len(samples) && samples[j].at-a.at < 100*time.Millisecond {
				j++
			}
			if j == len(samples) {
				break
			}
			b := samples[j]
			share := float64(b.ticks-a.ticks) / 100 / (b.at - a.at).Seconds()
			if best == nil || share > best.Share {
				best = &busiest{share, samples[i].at.Seconds()}
			}
		}
		out <- best
	}()
	return out
}

// serverCPU is the process's utime+stime in clock ticks (USER_HZ, 100 on Linux), or 0 without a pid.
func serverCPU(pid int) (int64, error) {
	if pid == 0 {
		return 0, nil
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name (which may hold spaces), from field 3 on.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	return utime + stime, errors.Join(err1, err2)
}

type latency struct {
	P50 float64 `json:"p50_ms"`
	P90 float64 `json:"p90_ms"`
	P99 float64 `json:"p99_ms"`
	Max float64 `json:"max_ms"`
}

// tail is the mean of each latency part over the slowest 1 % of answers (at least one), and
// when the first and the last of them were meant to be sent (seconds into the run): a short
// span is one stall, a long one a tail spread over the run.
type tail struct {
	Count  int     `json:"count"`
	FirstS float64 `json:"first_s"`
	LastS  float64 `json:"last_s"`
	LateMS float64 `json:"late_ms"`
	TCPMS  float64 `json:"tcp_ms"`
	TLSMS  float64 `json:"tls_ms"`
	H2MS   float64 `json:"h2_ms"`
	RPCMS  float64 `json:"rpc_ms"`
}

type report struct {
	Client         string            `json:"client"`
	Addr           string            `json:"addr"`
	KeyType        string            `json:"key_type"`
	Concurrency    int               `json:"concurrency"`
	Connections    string            `json:"connections"`
	TargetRate     *float64          `json:"target_rate"`
	ElapsedS       float64           `json:"elapsed_s"`
	OK             uint64            `json:"ok"`
	Errors         uint64            `json:"errors"`
	Dropped        uint64            `json:"dropped"`
	ErrorsByKind   map[string]uint64 `json:"errors_by_kind"`
	ErrorExamples  map[string]string `json:"error_examples"`
	SignsPerS      float64           `json:"signs_per_s"`
	Latency        latency           `json:"latency"`
	Tail           tail              `json:"slowest_1pct"`
	KeyExchange    map[string]uint64 `json:"key_exchange"`
	ServerCPUS     *float64          `json:"server_cpu_s"`
	ServerCPUUsPer *float64          `json:"server_cpu_us_per_sign"`
	ServerBusiest  *busiest          `json:"server_busiest_100ms"`
}

func newReport(o options, cars []*sidecar, start time.Time, elapsed time.Duration, dropped uint64, cpu0, cpu1 int64) *report {
	r := &report{
		Client: "goload", Addr: o.addr, KeyType: o.key, Concurrency: o.sidecars,
		Connections: map[string]string{"new": "new", "reuse": "reused"}[o.mode],
		ElapsedS:    elapsed.Seconds(), Dropped: dropped,
		ErrorsByKind: map[string]uint64{}, ErrorExamples: map[string]string{}, KeyExchange: map[string]uint64{},
	}
	if o.rate > 0 {
		r.TargetRate = &o.rate
	}
	var lat []parts
	for _, s := range cars {
		lat = append(lat, s.t.lat...)
		for k, v := range s.t.errors {
			r.ErrorsByKind[k] += v
			r.Errors += v
		}
		for k, v := range s.t.examples {
			if _, ok := r.ErrorExamples[k]; !ok {
				r.ErrorExamples[k] = v
			}
		}
		for k, v := range s.t.kx {
			r.KeyExchange[k] += v
		}
	}
	r.Errors += dropped
	r.OK = uint64(len(lat))
	r.SignsPerS = float64(r.OK) / elapsed.Seconds()
	if len(lat) > 0 {
		slices.SortFunc(lat, func(a, b parts) int { return int(a.total() - b.total()) })
		at := func(q float64) float64 {
			i := int(q*float64(len(lat))+0.999999) - 1
			return ms(lat[max(0, min(i, len(lat)-1))].total())
		}
		r.Latency = latency{P50: at(0.5), P90: at(0.9), P99: at(0.99), Max: at(1)}
		r.Tail = slowest(lat[len(lat)-max(1, len(lat)/100):], start)
	}
	if o.serverPID != 0 {
		s := float64(cpu1-cpu0) / 100
		r.ServerCPUS = &s
		if r.OK > 0 {
			us := s * 1e6 / float64(r.OK)
			r.ServerCPUUsPer = &us
		}
	}
	return r
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func slowest(lat []parts, start time.Time) tail {
	var sum parts
	first, last := lat[0].intended, lat[0].intended
	for _, p := range lat {
		sum = parts{late: sum.late + p.late, tcp: sum.tcp + p.tcp, tls: sum.tls + p.tls, h2: sum.h2 + p.h2, rpc: sum.rpc + p.rpc}
		if p.intended.Before(first) {
			first = p.intended
		}
		if p.intended.After(last) {
			last = p.intended
		}
	}
	n := time.Duration(len(lat))
	return tail{Count: len(lat), FirstS: first.Sub(start).Seconds(), LastS: last.Sub(start).Seconds(),
		LateMS: ms(sum.late / n), TCPMS: ms(sum.tcp / n), TLSMS: ms(sum.tls / n), H2MS: ms(sum.h2 / n), RPCMS: ms(sum.rpc / n)}
}

func (r *report) print(w *os.File) {
	loop := "closed loop"
	if r.TargetRate != nil {
		loop = fmt.Sprintf("open loop %.0f/s", *r.TargetRate)
	}
	fmt.Fprintf(w, "goload → %s  csr=%s  sidecars=%d  connections=%s  %s\n", r.Addr, r.KeyType, r.Concurrency, r.Connections, loop)
	fmt.Fprintf(w, "  %d certificates in %.2fs: %.0f/s, %d errors (%d dropped)\n", r.OK, r.ElapsedS, r.SignsPerS, r.Errors, r.Dropped)
	fmt.Fprintf(w, "  latency p50 %.2f ms  p90 %.2f ms  p99 %.2f ms  max %.2f ms\n", r.Latency.P50, r.Latency.P90, r.Latency.P99, r.Latency.Max)
	t := r.Tail
	fmt.Fprintf(w, "  slowest %d on average: late %.2f + tcp %.2f + tls %.2f + h2 %.2f + rpc %.2f ms (sent %.2f-%.2f s into the run)\n",
		t.Count, t.LateMS, t.TCPMS, t.TLSMS, t.H2MS, t.RPCMS, t.FirstS, t.LastS)
	for k, v := range r.KeyExchange {
		fmt.Fprintf(w, "  key exchange %s: %d\n", k, v)
	}
	for k, v := range r.ErrorsByKind {
		fmt.Fprintf(w, "  error %s ×%d, e.g. %s\n", k, v, r.ErrorExamples[k])
	}
	if r.ServerCPUUsPer != nil {
		fmt.Fprintf(w, "  server CPU %.2fs: %.0f µs per certificate\n", *r.ServerCPUS, *r.ServerCPUUsPer)
	}
	if b := r.ServerBusiest; b != nil {
		fmt.Fprintf(w, "  server's busiest 100 ms: %.0f %% of a core, %.2f s into the run\n", b.Share*100, b.AtS)
	}
}
