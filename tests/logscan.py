#!/usr/bin/env python3
"""Scans the debug logs of every Sentry the Rust test suite started (kept by the test harness in
$SENTRY_TEST_LOGS, see tests/common/mod.rs) and fails if any holds a secret:

* a PEM block of any kind (private keys, CSRs: Sentry never logs PEM);
* a JWT (Kubernetes service-account tokens, JWKS-validator tokens, issued JWT-SVIDs);
* a base64 line of a private key that was in that Sentry's credentials directory (`.secrets`).

Usage: tests/logscan.py DIR
"""

import pathlib
import re
import sys

PEM = re.compile(r"-----BEGIN [A-Z0-9 ]+-----")
# Two base64url JSON objects (header and claims) and a signature: a compact JWS.
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")
# A key line shorter than this could occur by chance in a log.
MIN_SECRET = 24


def findings(log: str, secrets: list[str]) -> list[str]:
    found = []
    if m := PEM.search(log):
        found.append(f"a PEM block ({m.group(0)})")
    if JWT.search(log):
        found.append("a JWT")
    for i, line in enumerate(secrets):
        if len(line) >= MIN_SECRET and line in log:
            found.append(f"line {i} of a private key")
            break
    return found


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    logs = sorted(pathlib.Path(sys.argv[1]).glob("*.log"))
    if not logs:
        print(f"logscan: no Sentry logs in {sys.argv[1]}", file=sys.stderr)
        return 1
    failed = 0
    lines = debug_logs = 0
    for path in logs:
        text = path.read_text(errors="replace")
        lines += text.count("\n")
        debug_logs += "level=debug" in text or '"level":"debug"' in text
        secrets_file = path.with_suffix(".secrets")
        secrets = secrets_file.read_text().splitlines() if secrets_file.exists() else []
        for what in findings(text, secrets):
            print(f"logscan: {path.name} contains {what}")
            failed += 1
    print(
        f"logscan: {len(logs)} Sentry logs ({debug_logs} with debug lines), {lines} lines: "
        f"{failed} finding(s)"
    )
    if debug_logs == 0:
        print("logscan: no log was at debug level; the scan proves nothing", file=sys.stderr)
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
