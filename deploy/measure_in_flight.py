"""Measures what each request in flight costs the gateway in resident memory
outside its memory budget (connections, tasks, buffers of the HTTP stacks):
N requests routed through Portkey to the local upstream are held open at
once, streamed (the upstream sends a chunk a second) or not (it answers
after a delay), and the gateway's RSS is read while they are held. Used for
the sizing rule in docs/deployment.md.

    cargo build --release --bin gatewayz --bin gatewayz-upstream && python3 deploy/measure_in_flight.py
"""
import asyncio, json, os, subprocess, sys, time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "release")
COUNTS = [int(n) for n in sys.argv[1:]] or [250, 1000, 2000]


def rss_mib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024


def start(args, env=None):
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


async def hold(port, body, opened, release):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    data = json.dumps(body).encode()
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer k\r\n"
        b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(data), data)
    )
    await writer.drain()
    opened.append(1)
    await release.wait()
    writer.close()


async def measure(gateway, port, count, stream):
    body = {"model": "@openai/gpt-4o-mini", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
    opened, release = [], asyncio.Event()
    tasks = [asyncio.create_task(hold(port, body, opened, release)) for _ in range(count)]
    while len(opened) < count:
        await asyncio.sleep(0.05)
    await asyncio.sleep(2)  # every request upstream, streams at their first chunks
    held = rss_mib(gateway.pid)
    release.set()
    await asyncio.gather(*tasks)
    return held


def main():
    upstream = start([os.path.join(ROOT, "gatewayz-upstream"), "--delay-ms", "60000", "--chunks", "60", "--gap-ms", "1000", "--threads", "1"])
    upstream_address = upstream.stdout.readline().strip()
    env = dict(
        PATH=os.environ.get("PATH", ""),
        GATEWAYZ_BIND="127.0.0.1:18992",
        GATEWAYZ_ADMIN_BIND="127.0.0.1:18993",
        GATEWAYZ_API_KEYS="k",
        GATEWAYZ_MAX_IN_FLIGHT="100000",
        PORTKEY_API_KEY="pk-measure",
        PROVIDER_OPENAI_API_KEY="sk-measure",
        PORTKEY_BASE_URL=f"http://{upstream_address}/v1",
        RUST_LOG="warn",
    )
    gateway = start([os.path.join(ROOT, "gatewayz")], env)
    try:
        time.sleep(1)
        idle = rss_mib(gateway.pid)
        print(f"idle {idle:.1f} MiB")
        for stream in (False, True):
            for count in COUNTS:
                before = rss_mib(gateway.pid)
                held = asyncio.run(measure(gateway, 18992, count, stream))
                time.sleep(1)
                kind = "streams" if stream else "non-streaming requests"
                per = (held - before) * 1024 / count
                print(f"{count} {kind} held: {held:.1f} MiB (from {before:.1f}): {per:.0f} KiB each; after {rss_mib(gateway.pid):.1f} MiB")
    finally:
        gateway.terminate()
        upstream.terminate()


main()
