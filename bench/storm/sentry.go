package main

// One Sentry process in Kubernetes mode, started as deploy/deployment.yaml runs it (outside the
// cluster: --kubeconfig with the dapr-sentry token), and its CPU time and peak RSS from /proc.

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type server struct {
	name    string
	cmd     *exec.Cmd
	addr    string
	healthz string
	exited  chan struct{}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startServer runs bin in Kubernetes mode with its output in logFile and waits for /healthz.
func startServer(name, bin, kubeconfig, workDir string, timeout time.Duration) (*server, error) {
	var ports [3]int
	for i := range ports {
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		ports[i] = p
	}
	creds := filepath.Join(workDir, "creds-"+name) // must stay empty: the bundle lives in the Secret
	if err := os.MkdirAll(creds, 0o700); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(workDir, name+".log"))
	if err != nil {
		return nil, err
	}
	args := []string{"--issuer-credentials", creds,
		"--port", strconv.Itoa(ports[0]), "--healthz-port", strconv.Itoa(ports[1]),
		"--metrics-port", strconv.Itoa(ports[2]),
		"--mode", "kubernetes", "--kubeconfig", kubeconfig, "--trust-domain", trustDomain}
	if name == "ours" {
		// Every simulated sidecar dials from 127.0.0.1; in a cluster each pod has its own address.
		// Give the one loopback address the whole in-flight bound instead of its fair share.
		args = append(args, "--max-in-flight-per-peer", "1024")
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "NAMESPACE="+controlPlaneNS, "DAPR_UNSAFE_SKIP_CONTAINER_UID_GID_CHECK=true")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &server{name: name, cmd: cmd, addr: fmt.Sprintf("127.0.0.1:%d", ports[0]),
		healthz: fmt.Sprintf("http://127.0.0.1:%d/healthz", ports[1]), exited: make(chan struct{})}
	go func() { _ = cmd.Wait(); logf.Close(); close(s.exited) }()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-s.exited:
			return nil, fmt.Errorf("%s exited before it was healthy (see %s)", name, logf.Name())
		default:
		}
		if resp, err := http.Get(s.healthz); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s, nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.stop()
	return nil, fmt.Errorf("%s not healthy within %s (see %s)", name, timeout, logf.Name())
}

func (s *server) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(15 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
}

// cpuSeconds is utime + stime of pid (fields 14 and 15 of /proc/PID/stat, in clock ticks).
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; the fields after its ')' are fixed.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	u, err1 := strconv.ParseFloat(f[11], 64)
	s, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bad /proc/%d/stat", pid)
	}
	return (u + s) / 100, nil // USER_HZ is 100 on Linux
}

// peakRSSMiB is VmHWM of pid.
func peakRSSMiB(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			return kb / 1024, err
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
}
