#!/usr/bin/env bash
# The peer race: sentry-rs against Dapr's Go sentry (v1.18.3, built by bench/peer/build) on the
# same machine, same bundle, same load generators, alternating runs. Two clients: bench/goload
# (daprd-like: Dapr's pkg/security pieces on grpc-go and Go's crypto/tls, X25519MLKEM768 first)
# and sentry-load (ours, Rust/rustls).
#
#   bench/compare.sh                                  # full race (~20 min on 2 cores)
#   ROUNDS=1 DURATION=2s CLIENTS=goload bench/compare.sh  # quick look
#
# Each server runs pinned to core 1 (taskset -c 1), the load generator pinned to core 0. Both
# servers are started once on copies of one bundle (Ed25519 root and issuer) and stay up; only
# one is under load at a time. Scenarios: CSR key Ed25519 / P-256 × 1, 64, 1000 sidecars × a new
# TLS connection per request / one reused connection per sidecar (closed loop: each sidecar sends
# its next request when the last is answered), plus 1,000 sidecars on new connections in open loop
# at OPEN_RATE/s (latency from the intended send time). The open loop measures the server's
# latency, so its load generator may use every core (OPEN_LOAD_CORE, default 0,1; the server stays
# on core 1): on core 0 alone the one-core Go client's own queue is most of the tail. By default
# OPEN_RATE is half of sentry-rs's capacity measured in closed loop with that same placement (a
# closed-loop run of 1,000 sidecars on new connections per round, reported as its own row).
# goload reads the server's CPU itself around its timed window (reused connections are dialled
# before it); for sentry-load it is read around the run.
# For every run also the server's CPU time per signed certificate (from /proc/PID/stat), which is
# far less sensitive than signs/s to other work on a shared machine. Then peak RSS (VmHWM) of each
# server, and cold start to ready (process start → /healthz 200) with an existing bundle.
# Results: target/bench-compare/<timestamp>/{results.jsonl,extra.json,summary.md}.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5s}
COLDSTARTS=${COLDSTARTS:-5}
KEYS=${KEYS:-"ed25519 p256"}
CONCURRENCY=${CONCURRENCY:-"1 64 1000"}
MODES=${MODES:-"new reuse"}
OPEN_RATE=${OPEN_RATE:-auto}
CLIENTS=${CLIENTS:-"goload sentry-load"}
# goload's per-request timeout. daprd gives each attempt 3 s and retries up to 5 times; with
# 1,000 sidecars dialling at once the one-core Go client itself needs seconds per round of 1,000
# handshakes, so a 3 s limit measures only timeouts there. A longer limit keeps every request.
GOLOAD_TIMEOUT=${GOLOAD_TIMEOUT:-30s}
# GOGC for goload alone (unset: Go's default), to see how much of a tail is the load
# generator's own garbage collector; the servers never see it.
GOLOAD_GOGC=${GOLOAD_GOGC:-}
# Our binary: the host's glibc build by default; OURS_TARGET=x86_64-unknown-linux-musl races the
# static musl binary that scripts/image puts in the container image (what Dapr's chart runs).
OURS_TARGET=${OURS_TARGET:-}
# HALT_POLL_NS (a VM guest with the haltpoll cpuidle driver only): how long an idle vCPU polls
# for work before it halts, for the whole run, put back after. A halted vCPU is woken by the
# host, which on a busy host adds its scheduling delay to every wake-up of a waiting thread;
# unset leaves the machine's setting (here 0: halt at once).
HALT_POLL_NS=${HALT_POLL_NS:-}
halt_poll=/sys/module/haltpoll/parameters/guest_halt_poll_ns
SERVER_CORE=${SERVER_CORE:-1}
LOAD_CORE=${LOAD_CORE:-0}
OPEN_LOAD_CORE=${OPEN_LOAD_CORE:-0,1}
load_core=$LOAD_CORE # the placement of the current phase

bench/peer/build
cargo build --release -p sentry -p sentry-load --bins
ours=$repo/target/release/sentry
if [[ -n $OURS_TARGET ]]; then
  # aws-lc-sys compiles C for the target, as in scripts/image.
  [[ $OURS_TARGET == x86_64-unknown-linux-musl ]] && export CC_x86_64_unknown_linux_musl=${CC_x86_64_unknown_linux_musl:-musl-gcc}
  cargo build --release --target "$OURS_TARGET" --bin sentry
  ours=$repo/target/$OURS_TARGET/release/sentry
fi
dapr=$repo/target/dapr/sentry
load=$repo/target/release/sentry-load
goload=$repo/target/goload
(cd bench/goload && go build -o "$goload" .)

pids=()
halt_poll_was=
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true
  if [[ -n $halt_poll_was ]]; then echo "$halt_poll_was" >"$halt_poll"; fi
}
trap cleanup EXIT
if [[ -n $HALT_POLL_NS ]]; then
  if [[ ! -w $halt_poll ]]; then
    echo "HALT_POLL_NS: $halt_poll is not writable here (not a haltpoll VM guest, or not root)" >&2
    exit 1
  fi
  halt_poll_was=$(cat "$halt_poll")
  echo "$HALT_POLL_NS" >"$halt_poll"
  echo "guest_halt_poll_ns $HALT_POLL_NS for this run (was $halt_poll_was)"
fi

work=$repo/target/bench-compare/$(date +%Y%m%d-%H%M%S)
mkdir -p "$work"
echo "results in $work"
{ echo "ours: $ours ($(file -b "$ours" | grep -Eo "static(-pie)? linked|dynamically linked"))"
  [[ -f $halt_poll ]] && echo "guest_halt_poll_ns: $(cat "$halt_poll")"
  echo "head: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"; } | tee "$work/setup.txt"
cat >"$work/config.yaml" <<'YAML'
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: daprsystem
spec:
  mtls:
    enabled: true
    workloadCertTTL: "24h"
    allowedClockSkew: "15m"
YAML

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_healthy() { # PORT
  for _ in $(seq 1 400); do
    if curl -fs -o /dev/null "http://127.0.0.1:$1/healthz"; then return 0; fi
    sleep 0.05
  done
  echo "server on healthz port $1 not ready" >&2
  return 1
}

# One bundle for both servers, generated by ours on an empty directory.
gen_port=$(free_port); gen_h=$(free_port); gen_m=$(free_port)
NAMESPACE=default "$ours" --issuer-credentials "$work/bundle" --port "$gen_port" \
  --healthz-port "$gen_h" --metrics-port "$gen_m" --config "$work/config.yaml" >"$work/gen.log" 2>&1 &
gen_pid=$!
wait_healthy "$gen_h"
kill "$gen_pid"; wait "$gen_pid" || true

declare -A port healthz pid
# Free ports can be taken by another process before the server binds them (a shared machine):
# a server that exits at start is started again on new ports, up to three times.
start_server() { # NAME BIN
  local name=$1 bin=$2 try
  cp -r "$work/bundle" "$work/creds-$name"
  for try in 1 2 3; do
    port[$name]=$(free_port); healthz[$name]=$(free_port)
    # Every load-generator sidecar dials from 127.0.0.1: ours gives that one address the whole
    # in-flight bound instead of its fair share (in a cluster each pod has its own address).
    extra=(); [[ $name == sentry-rs ]] && extra=(--max-in-flight-per-peer 1024)
    NAMESPACE=default taskset -c "$SERVER_CORE" "$bin" --issuer-credentials "$work/creds-$name" \
      --port "${port[$name]}" --healthz-port "${healthz[$name]}" --metrics-port "$(free_port)" \
      --config "$work/config.yaml" "${extra[@]}" >"$work/$name.log" 2>&1 &
    pid[$name]=$!
    pids+=("${pid[$name]}")
    if wait_healthy "${healthz[$name]}" && kill -0 "${pid[$name]}" 2>/dev/null; then return 0; fi
    kill "${pid[$name]}" 2>/dev/null || true
    echo "$name did not start (try $try): $(tail -n 1 "$work/$name.log")" >&2
  done
  return 1
}
start_server sentry-rs "$ours"
start_server dapr "$dapr"

run_load() { # CLIENT SERVER KEY CONC MODE DURATION [RATE]
  local client=$1 server=$2 key=$3 conc=$4 mode=$5 dur=$6 rate=${7:-} opt=()
  if [[ $client == goload ]]; then
    [[ -n $rate ]] && opt=(-rate "$rate")
    env ${GOLOAD_GOGC:+GOGC=$GOLOAD_GOGC} taskset -c "$load_core" "$goload" -addr "127.0.0.1:${port[$server]}" \
      -anchors "$work/bundle/ca.crt" -control-plane-namespace default -key "$key" \
      -sidecars "$conc" -mode "$mode" -duration "$dur" -timeout "$GOLOAD_TIMEOUT" -server-pid "${pid[$server]}" \
      "${opt[@]}" -json 2>>"$work/load.err"
  else
    [[ $mode == reuse ]] && opt=(--reuse)
    [[ -n $rate ]] && opt+=(--rate "$rate")
    taskset -c "$load_core" "$load" --addr "127.0.0.1:${port[$server]}" \
      --anchors "$work/bundle/ca.crt" --key-type "$key" --concurrency "$conc" \
      --duration "$dur" "${opt[@]}" --json 2>>"$work/load.err"
  fi
}

# Warm-up (page faults, lazy init), not recorded.
for c in $CLIENTS; do
  for s in sentry-rs dapr; do run_load "$c" "$s" ed25519 64 reuse 1s >/dev/null; done
done

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; } # user+system, 1/100 s
status_kib() { awk -v k="$2:" '$1==k {print $2}' "/proc/$1/status"; }

# One measured run: the load report plus the server's CPU time and RSS around it.
# One measured run: the load report plus the server's CPU time and RSS around it (goload's own
# reading of the server's CPU, around its timed window only, takes precedence).
measure() { # CLIENT SERVER KEY CONC MODE ROUND [RATE]
  local c=$1 s=$2 key=$3 conc=$4 mode=$5 round=$6 rate=${7:-} before after out
  before=$(cpu_ticks "${pid[$s]}")
  out=$(run_load "$c" "$s" "$key" "$conc" "$mode" "$DURATION" "$rate")
  after=$(cpu_ticks "${pid[$s]}")
  python3 - "$out" "$c" "$s" "$key" "$round" "$((after - before))" "$(status_kib "${pid[$s]}" VmRSS)" "$rate" "$load_core" >>"$work/results.jsonl" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
ticks = int(sys.argv[6])
r.setdefault("server_cpu_s", ticks / 100)
if r.get("server_cpu_us_per_sign") is None:
    r["server_cpu_us_per_sign"] = (r["server_cpu_s"] * 1e6 / r["ok"]) if r["ok"] else None
r.update(client=sys.argv[2], server=sys.argv[3], key=sys.argv[4], round=int(sys.argv[5]),
         server_rss_kib=int(sys.argv[7]), scenario="open" if sys.argv[8] else "closed", load_cores=sys.argv[9])
print(json.dumps(r))
sys.stderr.write("%-11s %-9s %-7s c=%-4s %-6s %s client on %s round %s: %8.0f signs/s  p99 %8.2f ms  errors %d  server CPU %5.1f us/sign\n" % (
    sys.argv[2], sys.argv[3], sys.argv[4], r["concurrency"], r["connections"], ("rate " + sys.argv[8]) if sys.argv[8] else "", sys.argv[9], sys.argv[5],
    r["signs_per_s"], r["latency"]["p99_ms"], r["errors"], r["server_cpu_us_per_sign"] or 0))
PY
}

for key in $KEYS; do
  for conc in $CONCURRENCY; do
    for mode in $MODES; do
      for round in $(seq 1 "$ROUNDS"); do
        for c in $CLIENTS; do
          for s in sentry-rs dapr; do measure "$c" "$s" "$key" "$conc" "$mode" "$round"; done
        done
      done
    done
  done
done
# Open loop: 1,000 sidecars on new connections at a fixed total rate (by default half of
# sentry-rs's closed-loop capacity in that scenario with the first client and the open loop's
# placement), so latency reflects service time at a load it sustains rather than queueing behind
# a saturated core.
load_core=$OPEN_LOAD_CORE
if [[ $OPEN_RATE == auto ]]; then
  first_client=${CLIENTS%% *}
  if [[ $OPEN_LOAD_CORE != "$LOAD_CORE" ]]; then
    for round in $(seq 1 "$ROUNDS"); do
      for s in sentry-rs dapr; do measure "$first_client" "$s" ed25519 1000 new "$round"; done
    done
  fi
  OPEN_RATE=$(python3 - "$work/results.jsonl" "$first_client" "$load_core" <<'PY'
import json, statistics, sys
rs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
cap = [r["signs_per_s"] for r in rs if r["client"] == sys.argv[2] and r["server"] == "sentry-rs"
       and r["key"] == "ed25519" and r["concurrency"] == 1000 and r["connections"] == "new"
       and r["scenario"] == "closed" and r["load_cores"] == sys.argv[3]]
print(round(statistics.median(cap) / 2) if cap else 500)
PY
)
  echo "open loop at $OPEN_RATE/s (half of sentry-rs's measured capacity, client on cores $load_core)"
fi
for round in $(seq 1 "$ROUNDS"); do
  for c in $CLIENTS; do
    for s in sentry-rs dapr; do measure "$c" "$s" ed25519 1000 new "$round" "$OPEN_RATE"; done
  done
done

declare -A hwm rss
for s in sentry-rs dapr; do
  hwm[$s]=$(status_kib "${pid[$s]}" VmHWM); rss[$s]=$(status_kib "${pid[$s]}" VmRSS)
  kill "${pid[$s]}"
done
wait 2>/dev/null || true
pids=()

# Cold start to ready with an existing bundle, alternating.
declare -A cold
for i in $(seq 1 "$COLDSTARTS"); do
  for s in sentry-rs dapr; do
    bin=$ours; [[ $s == dapr ]] && bin=$dapr
    h=$(free_port)
    ms=$(NAMESPACE=default bench/coldstart.py "$h" -- taskset -c "$SERVER_CORE" "$bin" \
      --issuer-credentials "$work/creds-$s" --port "$(free_port)" --healthz-port "$h" \
      --metrics-port "$(free_port)" --config "$work/config.yaml")
    cold[$s]="${cold[$s]:-}${cold[$s]:+,}$ms"
    echo "cold start $s: $ms ms"
  done
done

cat >"$work/extra.json" <<JSON
{"sentry-rs": {"vmhwm_kib": ${hwm[sentry-rs]}, "vmrss_kib": ${rss[sentry-rs]}, "coldstart_ms": [${cold[sentry-rs]}]},
 "dapr": {"vmhwm_kib": ${hwm[dapr]}, "vmrss_kib": ${rss[dapr]}, "coldstart_ms": [${cold[dapr]}]}}
JSON
bench/summarize.py "$work/results.jsonl" "$work/extra.json" | tee "$work/summary.md"
