"""Measures the gateway's resident memory: idle, at its peak while 32
keep-alive connections send 48,000 demo requests (a quarter of them
streamed), and after. Used to size the Deployment's memory request and limit.

    cargo build --release --bin gatewayz && python3 deploy/measure_rss.py
"""
import http.client, json, os, subprocess, threading, time

BINARY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "release", "gatewayz")
env = dict(os.environ, GATEWAYZ_BIND="127.0.0.1:18990", GATEWAYZ_ADMIN_BIND="127.0.0.1:18991", GATEWAYZ_API_KEYS="k", RUST_LOG="warn")
p = subprocess.Popen([BINARY], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
time.sleep(1)
def rss():
    for line in open(f"/proc/{p.pid}/status"):
        if line.startswith("VmRSS"): return int(line.split()[1]) / 1024
idle = rss()
peak = [idle]
stop = False
def sample():
    while not stop:
        peak[0] = max(peak[0], rss()); time.sleep(0.05)
threading.Thread(target=sample, daemon=True).start()
body = json.dumps({"model": "demo-1", "messages": [{"role": "user", "content": "hello " * 50}]})
sbody = json.dumps({"model": "demo-1", "stream": True, "messages": [{"role": "user", "content": "hello " * 50}]})
count = [0]
def worker():
    c = http.client.HTTPConnection("127.0.0.1", 18990)
    for i in range(1500):
        c.request("POST", "/v1/chat/completions", body=sbody if i % 4 == 0 else body, headers={"Authorization": "Bearer k", "Content-Type": "application/json"})
        r = c.getresponse(); r.read(); count[0] += 1
start = time.time()
threads = [threading.Thread(target=worker) for _ in range(32)]
[t.start() for t in threads]; [t.join() for t in threads]
elapsed = time.time() - start
time.sleep(1)
after = rss(); stop = True
print(f"idle {idle:.1f} MiB, peak {peak[0]:.1f} MiB under 32 connections ({count[0]} requests, {count[0]/elapsed:.0f} req/s from a Python client), after {after:.1f} MiB")
p.terminate(); p.wait()
