#!/usr/bin/env python3
"""Summarises bench/compare.sh results (JSON lines) as Markdown tables: per scenario the median
over the alternating rounds of each server's signs/s, the ratio sentry-rs/Dapr, the server CPU
time per signed certificate (and its ratio Dapr/sentry-rs), latency and errors; one table per
load generator (goload, sentry-load).

Usage: summarize.py RESULTS.jsonl [EXTRA.json]
"""
import json
import statistics
import sys
from collections import OrderedDict

NAN = float("nan")


def med(runs, f):
    vals = [v for v in (f(r) for r in runs) if v is not None]
    return statistics.median(vals) if vals else NAN


def ratio(a, b):
    return a / b if b and b == b and a == a else NAN


def round_tail(r):
    """One open-loop round's p99, when its slowest 1 % were sent and the server's busiest 100 ms."""
    t, b = r["slowest_1pct"], r.get("server_busiest_100ms")
    if "first_s" not in t:
        return f"{r['latency']['p99_ms']:.1f}"
    busy = f"; server ≤ {b['share'] * 100:.0f} %" if b else ""
    return f"{r['latency']['p99_ms']:.1f} [{t['first_s']:.2f}-{t['last_s']:.2f} s{busy}]"


def main():
    runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
    scen = OrderedDict()
    for r in runs:
        key = (r.get("client", "sentry-load"), r.get("scenario", "closed"), r["key"], r["concurrency"],
               r["connections"], r.get("target_rate"), r.get("load_cores", "0"))
        scen.setdefault(key, {}).setdefault(r["server"], []).append(r)

    rounds = 0
    for client in dict.fromkeys(k[0] for k in scen):
        print(f"\n### Client: {client}\n")
        print("| loop | CSR key | sidecars | connections | sentry-rs CPU µs/cert | Dapr CPU µs/cert | **CPU ratio Dapr/ours** | sentry-rs certs/s | Dapr certs/s | ratio | sentry-rs p50 / p99 / max ms | Dapr p50 / p99 / max ms | errors rs/Dapr |")
        print("| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
        for (cl, loop, key, conc, conn, rate, cores), by in scen.items():
            if cl != client:
                continue
            rs, dp = by.get("sentry-rs", []), by.get("dapr", [])
            rounds = max(rounds, len(rs))
            ours, dapr = med(rs, lambda r: r["signs_per_s"]), med(dp, lambda r: r["signs_per_s"])
            cpu_o = med(rs, lambda r: r.get("server_cpu_us_per_sign"))
            cpu_d = med(dp, lambda r: r.get("server_cpu_us_per_sign"))
            lat = lambda runs: " / ".join(f"{med(runs, lambda r: r['latency'][q]):.1f}" for q in ("p50_ms", "p99_ms", "max_ms"))
            erro, errd = sum(r["errors"] for r in rs), sum(r["errors"] for r in dp)
            label = f"open {rate:.0f}/s" if loop == "open" else "closed"
            if cores != "0":
                label += f", client on cores {cores}"
            print(f"| {label} | {key} | {conc} | {conn} | {cpu_o:.0f} | {cpu_d:.0f} | **{ratio(cpu_d, cpu_o):.2f}×** "
                  f"| {ours:,.0f} | {dapr:,.0f} | {ratio(ours, dapr):.2f}× | {lat(rs)} | {lat(dp)} | {erro}/{errd} |")
        tails = [(k, by) for k, by in scen.items() if k[0] == client and k[1] == "open"
                 and any("slowest_1pct" in r for rs in by.values() for r in rs)]
        if tails:
            print("\nWhere the open-loop tail is: the slowest 1 % of answers, each part's mean "
                  "(late = the client started after the intended time; tcp = until the TLS handshake starts; tls = the client's handshake; h2 = until grpc-go has the connection ready; rpc = SignCertificate), median over rounds.\n")
            print("The last column gives each round's p99 and, in brackets, when the first and the last of its "
                  "slowest 1 % were sent (seconds into the run): a span of a fraction of a second is one stall, "
                  "a span over the whole run a tail spread through it; 'server ≤ N %' is the most of one core the server used in any 100 ms of the round.\n")
            print("| rate | server | late ms | tcp ms | tls ms | h2 ms | rpc ms | p99 ms | p99 per round [slowest 1 % sent at; server's busiest 100 ms] |")
            print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
            for (_, _, _, _, _, rate, cores), by in tails:
                for server in ("sentry-rs", "dapr"):
                    rs = [r for r in by.get(server, []) if "slowest_1pct" in r]
                    part = lambda f: med(rs, lambda r: r["slowest_1pct"][f])
                    cells = " | ".join(f"{part(f + '_ms'):.2f}" for f in ("late", "tcp", "tls", "h2", "rpc"))
                    spans = ", ".join(round_tail(r) for r in sorted(rs, key=lambda r: r["round"]))
                    print(f"| {rate:.0f}/s, client on cores {cores} | {server} | {cells} | {med(rs, lambda r: r['latency']['p99_ms']):.2f} | {spans} |")
    print(f"\nMedian of {rounds} alternating rounds per cell (sentry-rs, Dapr, sentry-rs, Dapr, …). "
          "CPU ratio = Dapr's server CPU time per certificate ÷ ours (the headline; the target is ≥ 3×).")

    # Steady state: RSS after the runs with at most 64 sidecars that came before any run with
    # more (allocators keep memory once grown, so later small runs inherit the 1,000-sidecar peak).
    first_big = next((i for i, r in enumerate(runs) if r["concurrency"] > 64), len(runs))
    steady = {s: max((r["server_rss_kib"] for r in runs[:first_big] if r["server"] == s), default=0)
              for s in ("sentry-rs", "dapr")}
    if len(sys.argv) > 2:
        extra = json.load(open(sys.argv[2]))
        print("\n| server | steady RSS (after the first ≤64-sidecar runs) | peak RSS (VmHWM, whole race) | RSS at the end | cold start to ready, median (runs) |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for name in ("sentry-rs", "dapr"):
            e = extra.get(name, {})
            cs = e.get("coldstart_ms", [])
            csm = f"{statistics.median(cs):.1f} ms ({', '.join(f'{c:.0f}' for c in cs)})" if cs else "n/a"
            print(f"| {name} | {steady[name] / 1024:.1f} MiB | {e.get('vmhwm_kib', 0) / 1024:.1f} MiB "
                  f"| {e.get('vmrss_kib', 0) / 1024:.1f} MiB | {csm} |")


if __name__ == "__main__":
    main()
