"""A loopback server for the corpus: ETag, Last-Modified, 304 and gzip, cheap per request.

Run as its own process (``python -m bench.feedserver --feeds N``) so its CPU time is measured
apart from the pollers'. Every body, its gzip and its validators are prepared before the
server says ``READY <port>`` on stdout, so a request costs a header parse and a write.
The feeds of each agency are served on their own loopback address (127.0.0.1 … 127.0.0.20,
one port), as agencies are different hosts to a poller's per-host limit.

Control (on any address): ``/_control/round?n=K`` shows round K of the corpus (10% of the
feeds move on per round), ``/_control/stats`` returns and ``/_control/reset`` clears the
request counters.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import hashlib
import json
import socket
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from urllib.parse import parse_qs, urlsplit

from bench.corpus import AGENCIES, Corpus, mutations, newest_published, render_feed

HOSTS = len(AGENCIES)


@dataclass
class Body:
    plain: bytes
    gzipped: bytes
    etag: bytes
    last_modified: bytes
    modified_at: datetime
    content_type: bytes


@dataclass
class Stats:
    requests: int = 0
    ok: int = 0
    not_modified: int = 0
    not_found: int = 0
    gzip: int = 0
    bytes_out: int = 0
    paths: set[str] = field(default_factory=set)

    def as_dict(self) -> dict[str, int]:
        return {
            "requests": self.requests,
            "ok": self.ok,
            "not_modified": self.not_modified,
            "not_found": self.not_found,
            "gzip": self.gzip,
            "bytes_out": self.bytes_out,
            "distinct_paths": len(self.paths),
        }


def host_address(agency: int) -> str:
    return f"127.0.0.{agency % HOSTS + 1}"


def feed_url(corpus: Corpus, f: int, port: int) -> str:
    spec = corpus.spec(f)
    return f"http://{host_address(spec.agency)}:{port}{spec.path}"


def prepare(corpus: Corpus, f: int, round_: int) -> Body:
    plain = render_feed(corpus, f, round_)
    newest = newest_published(corpus, f, round_)
    return Body(
        plain=plain,
        gzipped=gzip.compress(plain, compresslevel=6, mtime=0),
        etag=b'"' + hashlib.sha1(plain).hexdigest()[:20].encode() + b'"',
        last_modified=format_datetime(newest, usegmt=True).encode(),
        modified_at=newest.replace(microsecond=0),
        content_type=corpus.spec(f).content_type.encode(),
    )


class FeedServer:
    def __init__(self, corpus: Corpus) -> None:
        self.corpus = corpus
        self.round = 0
        self.cache: dict[tuple[int, int], Body] = {}
        self.bodies: dict[str, Body] = {}
        self.paths = {corpus.spec(f).path: f for f in range(corpus.feeds)}
        self.stats = Stats()
        self.set_round(0)

    def set_round(self, round_: int) -> int:
        changed = 0
        for path, f in self.paths.items():
            key = (f, mutations(f, round_))
            body = self.cache.get(key)
            if body is None:
                body = self.cache[key] = prepare(self.corpus, f, round_)
            if self.bodies.get(path) is not body:
                changed += 1
            self.bodies[path] = body
        self.round = round_
        return changed

    def control(self, target: str) -> bytes:
        parts = urlsplit(target)
        if parts.path == "/_control/round":
            n = int(parse_qs(parts.query).get("n", ["0"])[0])
            changed = self.set_round(n)
            return json.dumps({"round": n, "changed": changed}).encode()
        if parts.path == "/_control/corpus":
            n = int(parse_qs(parts.query).get("n", [str(self.corpus.feeds)])[0])
            bodies = [self.cache[(f, 0)] for f in range(n)]
            return json.dumps(
                {
                    "feeds": n,
                    "items": sum(self.corpus.spec(f).items for f in range(n)),
                    "bytes": sum(len(b.plain) for b in bodies),
                    "gzip_bytes": sum(len(b.gzipped) for b in bodies),
                }
            ).encode()
        if parts.path == "/_control/stats":
            return json.dumps(self.stats.as_dict()).encode()
        if parts.path == "/_control/reset":
            self.stats = Stats()
            return b"{}"
        return b'{"error": "unknown control"}'

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    break
                keep = self.respond(head, writer)
                await writer.drain()
                if not keep:
                    break
        except ConnectionError:
            pass
        finally:
            writer.close()

    def respond(self, head: bytes, writer: asyncio.StreamWriter) -> bool:
        lines = head.split(b"\r\n")
        method, target, version = [*lines[0].split(b" ", 2), b"", b""][:3]
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name:
                headers[name.strip().lower()] = value.strip()
        keep = version == b"HTTP/1.1" and headers.get(b"connection", b"").lower() != b"close"
        connection = b"keep-alive" if keep else b"close"
        path = target.split(b"?", 1)[0].decode("latin-1")
        stats = self.stats
        stats.requests += 1
        if path.startswith("/_control/"):
            payload = self.control(target.decode("latin-1"))
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                + str(len(payload)).encode()
                + b"\r\nConnection: "
                + connection
                + b"\r\n\r\n"
                + payload
            )
            return keep
        body = self.bodies.get(path)
        if body is None:
            stats.not_found += 1
            writer.write(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: "
                + connection
                + b"\r\n\r\n"
            )
            return keep
        stats.paths.add(path)
        validators = b"ETag: " + body.etag + b"\r\nLast-Modified: " + body.last_modified + b"\r\n"
        if self.not_modified(headers, body):
            stats.not_modified += 1
            writer.write(
                b"HTTP/1.1 304 Not Modified\r\n"
                + validators
                + b"Connection: "
                + connection
                + b"\r\n\r\n"
            )
            return keep
        payload, encoding = body.plain, b""
        if b"gzip" in headers.get(b"accept-encoding", b""):
            payload, encoding = body.gzipped, b"Content-Encoding: gzip\r\n"
            stats.gzip += 1
        stats.ok += 1
        stats.bytes_out += len(payload)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: "
            + body.content_type
            + b"\r\n"
            + validators
            + encoding
            + b"Vary: Accept-Encoding\r\nContent-Length: "
            + str(len(payload)).encode()
            + b"\r\nConnection: "
            + connection
            + b"\r\n\r\n"
        )
        if method != b"HEAD":
            writer.write(payload)
        return keep

    @staticmethod
    def not_modified(headers: dict[bytes, bytes], body: Body) -> bool:
        inm = headers.get(b"if-none-match")
        if inm is not None:
            return body.etag in {t.strip().removeprefix(b"W/") for t in inm.split(b",")}
        ims = headers.get(b"if-modified-since")
        if ims:
            try:
                since = parsedate_to_datetime(ims.decode("latin-1"))
            except (TypeError, ValueError):
                return False
            if since.tzinfo is None:
                since = since.replace(tzinfo=UTC)
            return body.modified_at <= since
        return False


def _listen(port: int) -> tuple[list[socket.socket], int]:
    """One listening socket per agency address, all on the same port."""
    for _attempt in range(20):
        sockets: list[socket.socket] = []
        try:
            for n in range(HOSTS):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((host_address(n), port))
                sock.listen(1024)
                sock.setblocking(False)
                sockets.append(sock)
                port = sock.getsockname()[1]
            return sockets, port
        except OSError:
            for sock in sockets:
                sock.close()
            port = 0
    raise OSError("no free port on the loopback addresses")


async def serve(corpus: Corpus, port: int) -> None:
    server = FeedServer(corpus)
    sockets, port = _listen(port)
    servers = [await asyncio.start_server(server.handle, sock=s, backlog=1024) for s in sockets]
    print(f"READY {port}", flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


class ServerProcess:
    """The feed server as a child process, for the scenarios: start, control, measure."""

    def __init__(self, corpus: Corpus) -> None:
        import subprocess

        from bench import measure

        self.corpus = corpus
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.feedserver",
                "--feeds",
                str(corpus.feeds),
                "--seed",
                str(corpus.seed),
                "--base",
                corpus.base.isoformat(),
            ],
            stdout=subprocess.PIPE,
            text=True,
            env=measure.child_env(),
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("READY"):
            self.proc.kill()
            raise RuntimeError(f"the feed server did not start: {line!r}")
        self.port = int(line.split()[1])
        self.pid = self.proc.pid

    def urls(self, n: int) -> list[str]:
        return [feed_url(self.corpus, f, self.port) for f in range(n)]

    def _control(self, query: str) -> dict[str, int]:
        import urllib.request

        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.port}/_control/{query}", timeout=120
        ) as response:
            data: dict[str, int] = json.loads(response.read())
            return data

    def set_round(self, n: int) -> None:
        self._control(f"round?n={n}")

    def reset(self) -> None:
        self._control("reset")

    def stats(self) -> dict[str, int]:
        return self._control("stats")

    def corpus_stats(self, n: int) -> dict[str, int]:
        return self._control(f"corpus?n={n}")

    def cpu(self) -> float:
        from bench.measure import cpu_seconds

        return cpu_seconds(self.pid)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except Exception:
            self.proc.kill()
            self.proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feeds", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--base", help="ISO time of the newest round-0 item (default: an hour ago)")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    from bench.corpus import base_time

    base = datetime.fromisoformat(args.base) if args.base else base_time(datetime.now(UTC))
    corpus = Corpus(args.seed, args.feeds, base)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(corpus, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
