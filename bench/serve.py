"""Serving: requests/s for a cached topic feed (200) and a 304 through the real app, beside a
trivial Starlette endpoint that returns the same bytes, on the same uvicorn settings.

The load comes from ``wrk`` (Debian's package, installed with apt-get when missing and
possible) or, failing that, from a small asyncio client whose own CPU time is reported.
Each server runs alone in its own process; requests ask for gzip, as feed readers do.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import measure
from bench.report import Results, Row, Target

TOPIC = "cis-security"
CONNECTIONS = 16


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_wrk(log: Callable[[str], None]) -> str | None:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        log("serve: installing wrk from Debian's packages …")
        for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "wrk"]):
            subprocess.run(
                argv,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
                timeout=300,
                check=False,
            )
    return shutil.which("wrk")


@dataclass(frozen=True)
class Load:
    rps: float
    requests: int
    server_cpu: float  # seconds during the measured period
    client_cpu: float
    seconds: float
    statuses_ok: bool
    tool: str


def _wrk(
    wrk: str, url: str, headers: dict[str, str], seconds: float
) -> tuple[float, int, float, bool]:
    argv = [wrk, "-t1", f"-c{CONNECTIONS}", f"-d{seconds:.0f}s"]
    for k, v in headers.items():
        argv += ["-H", f"{k}: {v}"]
    m = measure.run([*argv, url], timeout=seconds + 30)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", m.stdout)
    total = re.search(r"(\d+) requests in", m.stdout)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", m.stdout)
    errors = re.search(r"Socket errors: .*", m.stdout)
    if rps is None or total is None:
        raise RuntimeError(f"wrk failed: {m.stdout[-1000:]}{m.stderr[-1000:]}")
    return float(rps.group(1)), int(total.group(1)), m.cpu, bad is None and errors is None


async def _client(host: str, port: int, request: bytes, until: float, counts: list[int]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < until:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = re.search(rb"(?i)content-length:\s*(\d+)", head)
            if length:
                await reader.readexactly(int(length.group(1)))
            counts[0] += 1
            if status not in (200, 304):
                counts[1] += 1
    finally:
        writer.close()


def _python_load(
    url: str, headers: dict[str, str], seconds: float
) -> tuple[float, int, float, bool]:
    parts = re.match(r"http://([^:/]+):(\d+)(/.*)", url)
    assert parts
    host, port, path = parts.group(1), int(parts.group(2)), parts.group(3)
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}"] + [
        f"{k}: {v}" for k, v in headers.items()
    ]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    counts = [0, 0]
    before = time.process_time()
    started = time.perf_counter()

    async def main() -> None:
        until = time.perf_counter() + seconds
        await asyncio.gather(
            *(_client(host, port, request, until, counts) for _ in range(CONNECTIONS))
        )

    asyncio.run(main())
    elapsed = time.perf_counter() - started
    return counts[0] / elapsed, counts[0], time.process_time() - before, counts[1] == 0


class Server:
    def __init__(self, argv: list[str], port: int) -> None:
        self.port = port
        self.proc = subprocess.Popen(
            argv, env=measure.child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return
            except OSError as e:
                if self.proc.poll() is not None:
                    err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                    raise RuntimeError(f"server exited: {err[-2000:]}") from e
                time.sleep(0.1)
        raise RuntimeError("server did not start")

    def cpu(self) -> float:
        return measure.cpu_seconds(self.proc.pid)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def load(
    server: Server, url: str, headers: dict[str, str], seconds: float, wrk: str | None
) -> Load:
    # warm up: caches, connections, first render
    if wrk:
        _wrk(wrk, url, headers, 1)
    else:
        _python_load(url, headers, 1)
    before = server.cpu()
    if wrk:
        rps, n, client_cpu, ok = _wrk(wrk, url, headers, seconds)
    else:
        rps, n, client_cpu, ok = _python_load(url, headers, seconds)
    return Load(rps, n, server.cpu() - before, client_cpu, seconds, ok, "wrk" if wrk else "python")


def run(
    results: Results,
    config: Path,
    workdir: Path,
    *,
    seconds: float,
    log: Callable[[str], None],
) -> None:
    wrk = ensure_wrk(log)
    if not wrk:
        results.note("wrk is not available: the Python load generator was used (its CPU is shown)")
    port = free_port()
    log("serve: the real app")
    app = Server(
        [
            sys.executable,
            "-m",
            "bench.serve_runner",
            "app",
            "--config",
            str(config),
            "--port",
            str(port),
        ],
        port,
    )
    url = f"http://127.0.0.1:{port}/topics/{TOPIC}.atom"
    try:
        request = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"})
        with urllib.request.urlopen(request, timeout=60) as response:
            body = response.read()
            headers = {k.lower(): v for k, v in response.headers.items()}
        etag = headers["etag"]
        gz = {"Accept-Encoding": "gzip"}
        app_200 = load(app, url, gz, seconds, wrk)
        app_304 = load(app, url, {**gz, "If-None-Match": etag}, seconds, wrk)
    finally:
        app.close()
    (workdir / "body").write_bytes(body)
    same = {
        k: v
        for k, v in headers.items()
        if k
        in ("content-type", "etag", "last-modified", "cache-control", "vary", "content-encoding")
    }
    (workdir / "headers.json").write_text(json.dumps(same), encoding="utf-8")
    log("serve: the trivial endpoint")
    port = free_port()
    trivial = Server(
        [
            sys.executable,
            "-m",
            "bench.serve_runner",
            "trivial",
            "--body",
            str(workdir / "body"),
            "--headers",
            str(workdir / "headers.json"),
            "--port",
            str(port),
        ],
        port,
    )
    try:
        base = load(trivial, f"http://127.0.0.1:{port}/topics/{TOPIC}.atom", gz, seconds, wrk)
    finally:
        trivial.close()

    def row(name: str, side: str, x: Load) -> None:
        results.add(
            Row(
                f"serve: {name}",
                f"{x.requests:,}",
                side,
                {
                    "requests/s": f"{x.rps:,.0f}",
                    "vs trivial": f"{x.rps / base.rps:.2f}×",
                    "server CPU": f"{100 * x.server_cpu / x.seconds:.0f}% of a core",
                    f"{x.tool} CPU": f"{100 * x.client_cpu / x.seconds:.0f}% of a core",
                },
                f"{len(body):,} bytes gzipped, {CONNECTIONS} connections"
                + ("" if x.statuses_ok else "; some responses were errors"),
            )
        )

    row("cached topic feed 200", "ours", app_200)
    row("topic feed 304", "ours", app_304)
    row("trivial endpoint, same bytes", "starlette", base)
    for name, x in (("Cached topic feed 200", app_200), ("Topic feed 304", app_304)):
        results.target(
            Target(
                f"{name} requests/s",
                f"{x.rps:,.0f} vs trivial Starlette {base.rps:,.0f} = {x.rps / base.rps:.2f}×",
                "≥ 0.5×",
                x.rps / base.rps >= 0.5 and x.statuses_ok,
            )
        )
