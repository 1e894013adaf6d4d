"""fetch() against real loopback servers: limits, redirects, the SSRF guard, status mapping."""

from __future__ import annotations

import base64
import gzip
import resource
import socket
import ssl
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import urllib3
from pytest_httpserver import HTTPServer

from aggregator.errors import FetchError
from aggregator.fetch import ACCEPT, Session, fetch, is_public_address, make_session
from aggregator.types import ErrorKind, Fetched, FetchRequest, NotModified

DATA = Path(__file__).parent / "data" / "fetch"
FEED = b'<?xml version="1.0"?><rss version="2.0"><channel><title>BELTA</title></channel></rss>'
UA = "aggregator-test/1.0 (+https://example.org/contact)"
MB = 1024 * 1024


# --------------------------------------------------------------------------- a byte-level server

Route = Callable[["Handler"], None]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so pooled connections are reused
    server: RawServer

    def do_GET(self) -> None:
        self.server.seen.append((self.path, dict(self.headers.items())))
        route = self.server.routes.get(self.path)
        if route is None:
            reply(self, 404, b"no such route")
        else:
            route(self)

    def log_message(self, format: str, *args: object) -> None:
        pass


class RawServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str = "127.0.0.1", ssl_context: ssl.SSLContext | None = None):
        super().__init__((host, 0), Handler)
        self.host = host
        self.port = self.server_address[1]
        self.routes: dict[str, Route] = {}
        self.seen: list[tuple[str, dict[str, str]]] = []
        self.stopping = threading.Event()
        if ssl_context is not None:
            self.socket = ssl_context.wrap_socket(self.socket, server_side=True)
        self.scheme = "https" if ssl_context else "http"
        self.thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, path: str, host: str | None = None) -> str:
        return f"{self.scheme}://{host or self.host}:{self.port}{path}"

    def paths(self) -> list[str]:
        return [path for path, _ in self.seen]

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients that hang up early are part of these tests

    def stop(self) -> None:
        self.stopping.set()
        self.shutdown()
        self.server_close()


def reply(
    h: Handler, status: int, body: bytes = b"", headers: dict[str, str] | None = None
) -> None:
    h.send_response(status)
    for name, value in (headers or {}).items():
        h.send_header(name, value)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


def feed(h: Handler) -> None:
    reply(h, 200, FEED, {"Content-Type": "application/rss+xml"})


def redirect(status: int, location: str) -> Route:
    return lambda h: reply(h, status, b"moved", {"Location": location})


def trickle(h: Handler, head: bytes, body_length: int) -> None:
    """Send ``head`` at once, then one byte a second until the client goes away."""
    try:
        h.wfile.write(head)
        h.wfile.flush()
        for _ in range(body_length):
            if h.server.stopping.wait(1.0):
                return
            h.wfile.write(b"x")
            h.wfile.flush()
    except OSError:
        return


@pytest.fixture
def server() -> Iterator[RawServer]:
    s = RawServer()
    yield s
    s.stop()


@pytest.fixture
def other() -> Iterator[RawServer]:
    """A second server on another loopback address, for two-host redirect chains."""
    s = RawServer("127.0.0.2")
    yield s
    s.stop()


@pytest.fixture
def session() -> Iterator[Session]:
    with make_session() as s:
        yield s


def get(url: str, session: Session, **kwargs: object) -> Fetched | NotModified:
    resolve = kwargs.pop("resolve", None)
    public = kwargs.pop("public_addresses", frozenset())
    request = FetchRequest(url=url, user_agent=UA, **kwargs)  # type: ignore[arg-type]
    return fetch(request, session, resolve=resolve, public_addresses=public)  # type: ignore[arg-type]


def fails(url: str, session: Session, **kwargs: object) -> FetchError:
    with pytest.raises(FetchError) as info:
        get(url, session, **kwargs)
    return info.value


# --------------------------------------------------------------------------- requests and bodies


def test_sends_polite_headers_and_returns_validators(
    httpserver: HTTPServer, session: Session
) -> None:
    httpserver.expect_request("/feed").respond_with_data(
        FEED, headers={"ETag": 'W/"v1"', "Last-Modified": "Tue, 01 Oct 2024 10:00:00 GMT"}
    )
    result = get(httpserver.url_for("/feed"), session)
    assert isinstance(result, Fetched)
    assert result.status == 200 and result.content == FEED
    assert result.etag == 'W/"v1"'
    assert result.last_modified == "Tue, 01 Oct 2024 10:00:00 GMT"
    assert result.headers["etag"] == 'W/"v1"'
    assert result.permanent_url is None and result.elapsed_ms >= 0
    sent = httpserver.log[0][0].headers
    assert sent["User-Agent"] == UA
    assert sent["Accept"] == ACCEPT
    assert sent["Accept-Encoding"] == "gzip, deflate"
    assert "If-None-Match" not in sent and "If-Modified-Since" not in sent


def test_conditional_get_gives_not_modified(httpserver: HTTPServer, session: Session) -> None:
    etag, modified = '"abc-123"', "Tue, 01 Oct 2024 10:00:00 GMT"
    httpserver.expect_request(
        "/feed", headers={"If-None-Match": etag, "If-Modified-Since": modified}
    ).respond_with_data(b"", status=304, headers={"ETag": etag})
    result = get(httpserver.url_for("/feed"), session, etag=etag, last_modified=modified)
    assert isinstance(result, NotModified)
    assert result.etag == etag and result.url == httpserver.url_for("/feed")


def test_gzip_body_is_decoded(server: RawServer, session: Session) -> None:
    body = FEED.replace(b"BELTA", "Новости".encode() * 200)
    server.routes["/gz"] = lambda h: reply(
        h, 200, gzip.compress(body), {"Content-Encoding": "gzip"}
    )
    result = get(server.url("/gz"), session)
    assert isinstance(result, Fetched) and result.content == body


def test_corrupt_gzip_is_an_error(server: RawServer, session: Session) -> None:
    server.routes["/bad"] = lambda h: reply(h, 200, FEED, {"Content-Encoding": "gzip"})
    error = fails(server.url("/bad"), session)
    assert error.kind is ErrorKind.HTTP and "decompress" in error.message


def test_body_over_the_cap_is_refused(server: RawServer, session: Session) -> None:
    server.routes["/big"] = lambda h: reply(h, 200, b"x" * 5000)

    def chunked(h: Handler) -> None:
        h.send_response(200)
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        for _ in range(5):
            h.wfile.write(b"400\r\n" + b"x" * 1024 + b"\r\n")
        h.wfile.write(b"0\r\n\r\n")

    server.routes["/chunked"] = chunked
    for path in ("/big", "/chunked"):
        error = fails(server.url(path), session, max_bytes=4096)
        assert error.kind is ErrorKind.TOO_LARGE
        assert error.message == "response larger than 4 KB"
    assert isinstance(get(server.url("/big"), session, max_bytes=5000), Fetched)


def test_not_modified_keeps_the_connection_for_the_next_poll(
    server: RawServer, session: Session
) -> None:
    ports: list[int] = []

    def conditional(h: Handler) -> None:
        ports.append(h.client_address[1])
        if h.headers.get("If-None-Match") == '"v1"':
            reply(h, 304, headers={"ETag": '"v1"'})
        else:
            reply(h, 200, FEED, {"ETag": '"v1"'})

    server.routes["/feed"] = conditional
    assert isinstance(get(server.url("/feed"), session), Fetched)
    for _ in range(3):
        assert isinstance(get(server.url("/feed"), session, etag='"v1"'), NotModified)
    assert isinstance(get(server.url("/feed"), session), Fetched)
    assert len(set(ports)) == 1  # one kept-alive connection served all five polls


def test_cookies_set_by_a_server_are_sent_back(server: RawServer, session: Session) -> None:
    # A common gate: the first request gets a cookie and a redirect to the same URL.
    def gate(h: Handler) -> None:
        if "visited=yes" in h.headers.get("Cookie", ""):
            feed(h)
        else:
            reply(h, 302, headers={"Location": "/feed", "Set-Cookie": "visited=yes; Path=/"})

    server.routes["/feed"] = gate
    result = get(server.url("/feed"), session)
    assert isinstance(result, Fetched) and result.content == FEED
    assert server.paths() == ["/feed", "/feed"]
    assert isinstance(get(server.url("/feed"), session), Fetched)
    assert server.seen[-1][1]["Cookie"] == "visited=yes"  # kept for later polls
    with make_session() as fresh:  # each session has its own cookies
        get(server.url("/feed"), fresh)
    assert "Cookie" not in server.seen[-2][1]


def test_credentials_in_the_url_are_sent_as_basic_auth(
    server: RawServer, other: RawServer, session: Session
) -> None:
    server.routes["/private"] = feed
    server.routes["/elsewhere"] = redirect(302, other.url("/feed"))
    other.routes["/feed"] = feed
    url = server.url("/private").replace("://", "://reader:p%40ss@")
    assert isinstance(get(url, session), Fetched)
    expected = "Basic " + base64.b64encode(b"reader:p@ss").decode()
    assert server.seen[-1][1]["Authorization"] == expected
    # Not passed on to where a redirect leads.
    assert isinstance(get(url.replace("/private", "/elsewhere"), session), Fetched)
    assert "Authorization" not in other.seen[-1][1]


# --------------------------------------------------------------------------- the deadline


def test_trickling_body_is_cut_at_the_deadline(server: RawServer, session: Session) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml\r\nContent-Length: 1000\r\n\r\n"
    server.routes["/slow"] = lambda h: trickle(h, head, 1000)
    started = time.monotonic()
    error = fails(server.url("/slow"), session, timeout=3.0)
    elapsed = time.monotonic() - started
    assert error.kind is ErrorKind.TIMEOUT and error.message == "timed out after 3.0 s"
    assert 2.5 <= elapsed <= 4.0


def test_trickling_headers_are_cut_at_the_deadline(server: RawServer, session: Session) -> None:
    # Every read returns a byte in time, so only a total deadline can end this.
    server.routes["/slow"] = lambda h: trickle(h, b"HTTP/1.1 200 OK\r\nX-Slow: ", 1000)
    started = time.monotonic()
    error = fails(server.url("/slow"), session, timeout=3.0)
    assert error.kind is ErrorKind.TIMEOUT
    assert 2.5 <= time.monotonic() - started <= 4.0


def test_each_fetch_keeps_its_own_deadline(server: RawServer, session: Session) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
    server.routes["/slow"] = lambda h: trickle(h, head, 1000)
    errors: list[FetchError] = []
    patient = threading.Thread(
        target=lambda: errors.append(fails(server.url("/slow"), session, timeout=4.0))
    )
    patient.start()
    while not server.seen:  # the long deadline is set first
        time.sleep(0.01)
    # A shorter deadline set later still ends its fetch first.
    assert fails(server.url("/slow"), session, timeout=1.0).kind is ErrorKind.TIMEOUT
    assert patient.is_alive()
    patient.join()
    assert errors[0].kind is ErrorKind.TIMEOUT and errors[0].message == "timed out after 4.0 s"


# --------------------------------------------------------------------------- compression bomb


def make_bomb(megabytes: int) -> bytes:
    """A valid gzip stream of ``megabytes`` MB of zeros, about 1000 times smaller."""
    # A full flush makes each 1 MB segment independent, so one segment can be repeated
    # and 1 GB never has to be compressed (or held) at once.
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    zeros = bytes(MB)
    segment = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(megabytes):
        crc = zlib.crc32(zeros, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    final_block = b"\x03\x00"
    trailer = struct.pack("<II", crc, (megabytes * MB) % 2**32)
    return header + segment * megabytes + final_block + trailer


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return make_bomb(1024)


def test_bomb_construction_is_valid_gzip(bomb: bytes) -> None:
    assert gzip.decompress(make_bomb(16)) == bytes(16 * MB)  # checks the CRC and length
    assert len(bomb) < 2 * MB


def _peak_growth_kb(action: Callable[[], object]) -> int:
    """Peak resident memory during ``action`` above the resident size before it, in KB."""
    status = Path("/proc/self/status")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets the peak (VmHWM)
    except OSError:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        action()
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before

    def field(name: str) -> int:
        line = next(x for x in status.read_text().splitlines() if x.startswith(name))
        return int(line.split()[1])

    before = field("VmRSS:")
    action()
    return field("VmHWM:") - before


@pytest.mark.parametrize("path", ["/bomb", "/to-bomb"])
def test_gzip_bomb_stops_at_the_cap_in_bounded_memory(
    server: RawServer, session: Session, bomb: bytes, path: str
) -> None:
    server.routes["/bomb"] = lambda h: reply(h, 200, bomb, {"Content-Encoding": "gzip"})
    server.routes["/to-bomb"] = redirect(302, "/bomb")
    errors: list[FetchError] = []

    def run() -> None:
        errors.append(fails(server.url(path), session))

    growth_kb = _peak_growth_kb(run)
    print(f"peak memory growth {growth_kb} KB")
    assert errors[0].kind is ErrorKind.TOO_LARGE
    assert errors[0].message == "response larger than 10 MB"
    assert growth_kb < 50 * 1024, f"memory grew by {growth_kb} KB"


# --------------------------------------------------------------------------- redirects


def test_redirect_loop_ends(server: RawServer, session: Session) -> None:
    server.routes["/loop"] = redirect(302, "/loop")
    error = fails(server.url("/loop"), session)
    assert error.kind is ErrorKind.TOO_MANY_REDIRECTS
    assert error.message == "more than 10 redirects"
    assert server.paths().count("/loop") == 11  # the first request and 10 redirects
    error = fails(server.url("/loop"), session, max_redirects=2)
    assert error.kind is ErrorKind.TOO_MANY_REDIRECTS


def test_permanent_redirects_report_the_new_url(
    server: RawServer, other: RawServer, session: Session
) -> None:
    server.routes["/old"] = redirect(301, other.url("/older"))
    other.routes["/older"] = redirect(308, "new")  # relative to the current URL
    other.routes["/new"] = feed
    result = get(server.url("/old"), session)
    assert isinstance(result, Fetched) and result.content == FEED
    assert result.url == other.url("/new")
    assert result.permanent_url == other.url("/new")


@pytest.mark.parametrize(
    ("chain", "permanent"),
    [([302], False), ([303], False), ([307], False), ([301, 302], False), ([302, 301], False)],
)
def test_temporary_redirects_store_nothing(
    server: RawServer, session: Session, chain: list[int], permanent: bool
) -> None:
    for i, status in enumerate(chain):
        server.routes[f"/r{i}"] = redirect(status, f"/r{i + 1}")
    server.routes[f"/r{len(chain)}"] = feed
    result = get(server.url("/r0"), session)
    assert isinstance(result, Fetched) and result.content == FEED
    assert result.url == server.url(f"/r{len(chain)}")
    assert result.permanent_url is None


def test_permanent_redirect_to_a_missing_feed_is_reported_with_the_error(
    server: RawServer, session: Session
) -> None:
    server.routes["/old"] = redirect(301, "/gone")
    server.routes["/gone"] = lambda h: reply(h, 410)
    error = fails(server.url("/old"), session)
    assert error.kind is ErrorKind.GONE and error.permanent_url == server.url("/gone")


def test_redirect_to_another_scheme_is_refused(server: RawServer, session: Session) -> None:
    server.routes["/ftp"] = redirect(302, "ftp://example.org/feed.xml")
    server.routes["/file"] = redirect(301, "file:///etc/passwd")
    for path in ("/ftp", "/file"):
        assert fails(server.url(path), session).kind is ErrorKind.BAD_URL
    assert fails("file:///etc/passwd", session).kind is ErrorKind.BAD_URL


def test_redirect_body_is_not_read(server: RawServer, session: Session) -> None:
    head = b"HTTP/1.1 302 Found\r\nLocation: /feed\r\nContent-Length: 100000\r\n\r\n"
    server.routes["/slow-redirect"] = lambda h: trickle(h, head, 100000)
    server.routes["/feed"] = feed
    started = time.monotonic()
    result = get(server.url("/slow-redirect"), session, timeout=5.0)
    assert isinstance(result, Fetched) and result.content == FEED
    assert time.monotonic() - started < 1.0


def test_error_body_is_not_read(server: RawServer, session: Session) -> None:
    head = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 100000\r\n\r\n"
    server.routes["/broken"] = lambda h: trickle(h, head, 100000)
    started = time.monotonic()
    assert fails(server.url("/broken"), session, timeout=5.0).kind is ErrorKind.SERVER
    assert time.monotonic() - started < 1.0


# --------------------------------------------------------------------------- SSRF guard


def public_resolver(public: RawServer, internal: RawServer) -> Callable[[str, int], list[str]]:
    """``public.example`` is the origin (on 127.0.0.2, declared public); ``internal.example``
    is a name that resolves to loopback."""
    names = {"public.example": public.host, "internal.example": "127.0.0.1"}
    return lambda host, port: [names[host]]


@pytest.fixture
def origin(other: RawServer, server: RawServer) -> dict[str, object]:
    """Settings for a fetch whose origin is the "public" server on 127.0.0.2."""
    return {
        "resolve": public_resolver(other, server),
        "public_addresses": frozenset({other.host}),
    }


def test_redirect_from_public_to_loopback_is_refused(
    other: RawServer, server: RawServer, session: Session, origin: dict[str, object]
) -> None:
    server.routes["/admin"] = feed
    other.routes["/to-ip"] = redirect(302, server.url("/admin"))
    other.routes["/to-name"] = redirect(301, server.url("/admin", host="internal.example"))
    for path in ("/to-ip", "/to-name"):
        error = fails(other.url(path, host="public.example"), session, **origin)
        assert error.kind is ErrorKind.BLOCKED
        assert error.message == "redirect to private address 127.0.0.1 refused"
        assert error.permanent_url is None
    assert server.seen == []  # nothing reached the private server

    result = get(
        other.url("/to-name", host="public.example"), session, allow_private=True, **origin
    )
    assert isinstance(result, Fetched) and result.content == FEED
    assert server.paths() == ["/admin"]


def test_pooled_private_connection_is_checked_again(
    other: RawServer, server: RawServer, session: Session, origin: dict[str, object]
) -> None:
    server.routes["/admin"] = feed
    other.routes["/to-ip"] = redirect(302, server.url("/admin"))
    # A direct fetch leaves a kept-alive connection to the private server in the pool.
    assert isinstance(get(server.url("/admin"), session), Fetched)
    error = fails(other.url("/to-ip", host="public.example"), session, **origin)
    assert error.kind is ErrorKind.BLOCKED
    assert server.paths() == ["/admin"]


def test_public_to_public_redirect_is_followed(
    other: RawServer, session: Session, origin: dict[str, object]
) -> None:
    other.routes["/a"] = redirect(302, "/feed")
    other.routes["/feed"] = feed
    result = get(other.url("/a", host="public.example"), session, **origin)
    assert isinstance(result, Fetched) and result.content == FEED


def test_configured_private_url_is_fetched_as_written(
    server: RawServer, other: RawServer, session: Session
) -> None:
    # The admin chose a private network: redirects inside it are allowed too.
    server.routes["/feed"] = redirect(302, other.url("/feed"))
    other.routes["/feed"] = feed
    result = get(server.url("/feed"), session)
    assert isinstance(result, Fetched) and result.url == other.url("/feed")


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.216.34", True),
        ("2606:4700::1111", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # cloud metadata
        ("100.64.0.1", False),  # CGNAT
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("240.0.0.1", False),
        ("::1", False),
        ("::", False),
        ("fe80::1", False),
        ("fd12:3456::1", False),
        ("ff02::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:10.0.0.1", False),
        ("not an address", False),
    ],
)
def test_address_classes(address: str, public: bool) -> None:
    assert is_public_address(address) is public


# --------------------------------------------------------------------------- status and network errors


@pytest.mark.parametrize(
    ("status", "headers", "kind", "retry_after", "message"),
    [
        (404, {}, ErrorKind.NOT_FOUND, None, "HTTP 404 Not Found"),
        (410, {}, ErrorKind.GONE, None, "HTTP 410 Gone"),
        (403, {}, ErrorKind.HTTP, None, "HTTP 403 Forbidden"),
        (
            429,
            {"Retry-After": "120"},
            ErrorKind.RATE_LIMITED,
            "120",
            "HTTP 429 Too Many Requests (Retry-After: 120)",
        ),
        (
            503,
            {"Retry-After": "Wed, 21 Oct 2037 07:28:00 GMT"},
            ErrorKind.RATE_LIMITED,
            "Wed, 21 Oct 2037 07:28:00 GMT",
            "HTTP 503 Service Unavailable (Retry-After: Wed, 21 Oct 2037 07:28:00 GMT)",
        ),
        (503, {}, ErrorKind.RATE_LIMITED, None, "HTTP 503 Service Unavailable"),
        (500, {}, ErrorKind.SERVER, None, "HTTP 500 Internal Server Error"),
        (502, {}, ErrorKind.SERVER, None, "HTTP 502 Bad Gateway"),
    ],
)
def test_status_kinds(
    httpserver: HTTPServer,
    session: Session,
    status: int,
    headers: dict[str, str],
    kind: ErrorKind,
    retry_after: str | None,
    message: str,
) -> None:
    httpserver.expect_request("/feed").respond_with_data("nope", status=status, headers=headers)
    error = fails(httpserver.url_for("/feed"), session)
    assert (error.kind, error.status, error.retry_after) == (kind, status, retry_after)
    assert error.message == message
    assert error.url == httpserver.url_for("/feed")


def test_connection_refused(session: Session) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    error = fails(f"http://127.0.0.1:{port}/feed", session)
    assert error.kind is ErrorKind.CONNECTION and error.message == "connection refused"


def test_dns_failure(session: Session) -> None:
    error = fails("http://nosuch.invalid/feed", session)
    assert error.kind is ErrorKind.DNS
    assert error.message == "DNS lookup failed for nosuch.invalid"


def test_reset_connection(server: RawServer, session: Session) -> None:
    def reset(h: Handler) -> None:
        # SO_LINGER 0 makes close() send a RST instead of a FIN.
        h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        h.close_connection = True

    server.routes["/reset"] = reset
    assert fails(server.url("/reset"), session).kind is ErrorKind.CONNECTION


@pytest.fixture
def tls_server() -> Iterator[RawServer]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(DATA / "cert.pem", DATA / "key.pem")  # self-signed, feed.test
    s = RawServer(ssl_context=context)
    s.routes["/feed"] = feed
    yield s
    s.stop()


def test_untrusted_certificate_is_a_tls_error(tls_server: RawServer, session: Session) -> None:
    error = fails(
        tls_server.url("/feed", host="feed.test"), session, resolve=lambda h, p: ["127.0.0.1"]
    )
    assert error.kind is ErrorKind.TLS
    assert error.message.startswith("TLS error: certificate verify failed")


def test_tls_keeps_the_host_name_while_the_address_is_pinned(
    tls_server: RawServer, session: Session
) -> None:
    session.verify = str(DATA / "cert.pem")
    loopback = lambda h, p: ["127.0.0.1"]  # noqa: E731
    result = get(tls_server.url("/feed", host="feed.test"), session, resolve=loopback)
    assert isinstance(result, Fetched) and result.content == FEED
    # The same address under a name the certificate does not carry is refused.
    error = fails(tls_server.url("/feed", host="other.test"), session, resolve=loopback)
    assert error.kind is ErrorKind.TLS


def test_plain_http_server_on_https_is_a_tls_error(server: RawServer, session: Session) -> None:
    url = server.url("/feed").replace("http://", "https://")
    assert fails(url, session).kind is ErrorKind.TLS


def test_session_must_come_from_make_session(server: RawServer) -> None:
    with urllib3.PoolManager() as plain, pytest.raises(ValueError, match="make_session"):
        get(server.url("/feed"), plain)
