#!/usr/bin/env python3
"""Cold start to ready: starts a server command and prints the milliseconds from process start
until GET /healthz on 127.0.0.1:PORT answers 200, then stops the server (SIGTERM).

Usage: coldstart.py PORT -- COMMAND [ARGS...]   (environment is passed through)
"""
import socket
import subprocess
import sys
import time


def healthz_ok(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.settimeout(0.5)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            head = s.recv(64)
            return head.startswith(b"HTTP/1.1 200") or head.startswith(b"HTTP/1.0 200")
    except OSError:
        return False


def main():
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        sys.exit(__doc__)
    port = int(sys.argv[1])
    cmd = sys.argv[3:]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            if healthz_ok(port):
                print(f"{(time.perf_counter() - start) * 1000:.1f}")
                return
            if proc.poll() is not None:
                sys.exit(f"server exited with {proc.returncode} before it was ready")
            if time.perf_counter() - start > 30:
                sys.exit("server not ready after 30s")
            time.sleep(0.0005)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    main()
