#!/usr/bin/python3
"""Hostile-client load on a running `nearlabel serve` (loopback only, bounded in time).

Usage: serve_hostile.py URL SERVER_PID IMAGE [--chunked-mb 1024] [--slow 20] [--slow-seconds 30]

Two scenarios, each printing its figure on one line (the third hostile load, 64 keep-alive
connections at 100 classify/s, is build/serve_load --rate: a Python client on these 2 cores
steals enough CPU from the server to distort its own latencies):
  chunked  one chunked POST of --chunked-mb MB of zeros: the server's RSS growth (VmRSS and
           VmHWM from /proc/PID/status, before and after).
  slow     --slow sockets each sending one header byte every 2 s for --slow-seconds, while
           another client asks /healthz 10 times a second: its p50/p99/max latency, failures.
bench/serve_load.sh runs it after the closed-loop figure.
"""
import argparse
import http.client
import socket
import time
import urllib.parse


def rss_kb(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS", "VmHWM")):
                k, v = line.split(":")
                out[k] = int(v.split()[0])
    return out


def pct(sorted_values, p):
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(p * len(sorted_values)))]


def chunked(host, port, pid, megabytes):
    before = rss_kb(pid)
    s = socket.create_connection((host, port))
    s.settimeout(60)
    s.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
              b"Transfer-Encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n" % (1 << 20) + b"\0" * (1 << 20) + b"\r\n"
    sent = 0
    try:
        for _ in range(megabytes):
            s.sendall(chunk)
            sent += 1
        s.sendall(b"0\r\n\r\n")
        status = s.recv(64).split(b"\r\n")[0].decode(errors="replace")
    except OSError as e:
        status = f"connection closed by the server after {sent} MB ({e.__class__.__name__})"
    s.close()
    time.sleep(0.5)
    after = rss_kb(pid)
    print(f"chunked: {megabytes} MB chunked body: {status}; server RSS {before['VmRSS'] // 1024} -> "
          f"{after['VmRSS'] // 1024} MB (peak {before['VmHWM'] // 1024} -> {after['VmHWM'] // 1024} MB), "
          f"growth {(after['VmHWM'] - before['VmHWM']) // 1024} MB")


def slow(host, port, n, seconds):
    socks = []
    for _ in range(n):
        s = socket.create_connection((host, port))
        s.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\n")
        socks.append(s)
    lat, failed = [], 0
    end = time.time() + seconds
    next_drip = 0.0
    while time.time() < end:
        if time.time() >= next_drip:
            for s in socks:
                try:
                    s.sendall(b"X")
                except OSError:
                    pass
            next_drip = time.time() + 2
        t = time.time()
        try:
            c = http.client.HTTPConnection(host, port, timeout=10)
            c.request("GET", "/healthz")
            ok = c.getresponse().status == 200
            c.close()
        except OSError:
            ok = False
        lat.append(time.time() - t)
        failed += not ok
        time.sleep(0.1)
    for s in socks:
        s.close()
    lat.sort()
    print(f"slow: {n} slow sockets for {seconds} s: {len(lat)} /healthz from another client, "
          f"p50 {pct(lat, .5) * 1000:.1f} ms, p99 {pct(lat, .99) * 1000:.1f} ms, "
          f"max {lat[-1] * 1000:.1f} ms; {failed} failed")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("pid", type=int)
    ap.add_argument("image")
    ap.add_argument("--chunked-mb", type=int, default=1024)
    ap.add_argument("--slow", type=int, default=20)
    ap.add_argument("--slow-seconds", type=float, default=30)
    a = ap.parse_args()
    u = urllib.parse.urlparse(a.url)
    if u.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("serve_hostile: loopback servers only")
    chunked(u.hostname, u.port, a.pid, a.chunked_mb)
    slow(u.hostname, u.port, a.slow, a.slow_seconds)


if __name__ == "__main__":
    main()
