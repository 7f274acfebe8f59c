#!/usr/bin/env python3
"""HTTP source -> blackhole: events/s and request latency (p50/p99) at several batch sizes.

One client, one kept-alive connection, requests back to back (each answered only after
its events are acknowledged), so this measures the round trip, not the server's ceiling.
Usage: scripts/bench-http-source.py PATH/TO/sluicebox [seconds-per-size]
"""
import http.client, os, socket, subprocess, sys, tempfile, time

BIN = sys.argv[1]
SECS = float(sys.argv[2]) if len(sys.argv) > 2 else 3.0
with socket.socket() as s:
    s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
d = tempfile.mkdtemp()
cfg = os.path.join(d, "p.toml")
open(cfg, "w").write(f'''data_dir = "state"
[api]
enabled = false
[sources.h]
type = "http"
address = "127.0.0.1:{port}"
[sinks.out]
type = "blackhole"
inputs = ["h"]
''')
p = subprocess.Popen([BIN, "run", cfg], stderr=subprocess.DEVNULL)
for _ in range(600):
    try: socket.create_connection(("127.0.0.1", port)).close(); break
    except OSError: time.sleep(0.05)
line = b'{"timestamp":"2026-11-25T10:00:00.123Z","level":"INFO","service":"api","msg":"GET /x 200"}\n'
for n in (1, 100, 1000):
    body = line * n
    c = http.client.HTTPConnection("127.0.0.1", port)
    lat = []; t0 = time.perf_counter()
    while time.perf_counter() - t0 < SECS:
        a = time.perf_counter()
        c.request("POST", "/", body, {"Content-Type": "application/x-ndjson"})
        r = c.getresponse(); r.read()
        assert r.status == 200, r.status
        lat.append(time.perf_counter() - a)
    el = time.perf_counter() - t0
    lat.sort()
    print(f"batch {n:>5}: {len(lat)*n/el:>10.0f} events/s  {len(lat)/el:>7.0f} req/s  "
          f"p50 {lat[len(lat)//2]*1e3:.2f} ms  p99 {lat[int(len(lat)*0.99)]*1e3:.2f} ms")
p.terminate(); p.wait()
