#!/usr/bin/env python3
"""Writes a synthetic egressd JSON access log for benchmarking `report`
and `audit`: N lines (default 1,000,000) spread evenly over a week, over
D destinations (default 4,000) of which about a tenth are refused, with
a few hundred clients (their source ports varying, as in real logs) and
paths. Deterministic (seeded). A third argument, the share of lines
refused, makes a refusal-heavy log: 1 is report mode over a week, or a pod
retrying a blocked host.

    python3 benches/gen_access_log.py 60000000 > /tmp/week.log   # a week at 100 req/s
    python3 benches/gen_access_log.py 1000000 4000 1 > /tmp/refused.log
"""
import random
import sys
import time

n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
dests = int(sys.argv[2]) if len(sys.argv) > 2 else 4_000
share = float(sys.argv[3]) if len(sys.argv) > 3 else None
rng = random.Random(42)
start = 1_795_000_000  # a Monday in 2026, UTC
week = 7 * 24 * 3600
hosts = [f"svc{i}.{rng.choice(['example.com', 'example.net', 'cdn.example.org'])}" for i in range(dests)]
out = sys.stdout
line = ('{{"timestamp":"{ts}","level":"INFO","message":"access","client":"10.{a}.{b}.{c}:{p}",'
        '"kind":"{kind}","method":"{m}","host":"{h}","port":{port}{path},"decision":"{d}",'
        '"reason":"{r}","status":{s},"target":"egressd::access"}}\n')
buf = []
for i in range(n):
    t = start + i * week // n
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".000000Z"
    j = int(rng.paretovariate(1.2)) % dests
    h = hosts[j]
    refused = j % 10 == 0 if share is None else rng.random() < share
    if rng.random() < 0.7:
        kind, m, port, path = "connect", "CONNECT", 443, ""
    else:
        kind, m, port = "http", rng.choice(["GET", "GET", "POST"]), 80
        path = f',"path":"/api/v{rng.randint(1, 3)}/item{rng.randint(1, 50)}"'
    buf.append(line.format(ts=ts, a=rng.randint(0, 3), b=rng.randint(0, 9), c=rng.randint(1, 20),
                           p=rng.randint(1024, 65535), kind=kind, m=m, h=h, port=port, path=path,
                           d="deny" if refused else "allow",
                           r="no_matching_rule" if refused else "allowed", s=403 if refused else 200))
    if len(buf) >= 10_000:
        out.write("".join(buf))
        buf.clear()
out.write("".join(buf))
