"""The HTTP edge: one conditional GET of a feed, safe against slow, huge and hostile servers.

    fetch(FetchRequest, session) -> Fetched | NotModified, or raises FetchError(kind=...)

Every limit applies to the whole exchange, redirects included:

- a total deadline (``request.timeout``), enforced by a watchdog that shuts the sockets
  down when it passes, so a server trickling headers or body one byte at a time is cut;
- a cap on the *decompressed* body, checked while streaming, so memory stays bounded;
- redirects are followed here (never by urllib3, which reads a redirect body in full),
  at most ``request.max_redirects`` of them, only to http(s);
- the SSRF guard: the connection classes resolve the host name themselves, check every
  address and connect to the checked address, so what is checked is what is connected to.
  After a redirect from a public address, private, loopback, link-local and similar
  addresses are refused unless the source allows them.

Use a session from :func:`make_session`: its urllib3 pools carry the guarded connections.
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import functools
import heapq
import http.client
import http.cookiejar
import ipaddress
import itertools
import logging
import os
import socket
import ssl
import string
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http import HTTPStatus
from types import TracebackType
from typing import Any
from urllib.parse import quote, unquote, urljoin, urlsplit

import urllib3
import urllib3.exceptions
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.response import BaseHTTPResponse
from urllib3.util import Retry, Timeout, parse_url
from urllib3.util.connection import create_connection
from urllib3.util.ssl_ import create_urllib3_context

from aggregator import __version__
from aggregator.errors import FetchError
from aggregator.types import ErrorKind, Fetched, FetchRequest, NotModified

log = logging.getLogger(__name__)

Resolver = Callable[[str, int], list[str]]

ACCEPT = (
    "application/atom+xml, application/rss+xml, application/rdf+xml;q=0.9, "
    "application/xml;q=0.8, text/xml;q=0.8, */*;q=0.5"
)
# Only what urllib3 decodes without optional packages.
ACCEPT_ENCODING = "gzip, deflate"

POOL_SIZE = 32  # connections kept per host (per_host caps how many are in use)
HOST_POOLS = 256  # hosts whose connections are kept between polls
_CHUNK = 64 * 1024
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_PERMANENT = frozenset({301, 308})
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
# One attempt per hop: a failed fetch is retried by the scheduler, not here.
_NO_RETRIES = Retry(0, read=False)
_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")

# Foreign exceptions a fetch can raise; each is turned into a FetchError.
_FOREIGN = (
    urllib3.exceptions.HTTPError,
    http.client.HTTPException,
    OSError,
)


class Session:
    """Connection pools whose connections apply the SSRF guard, shared by concurrent fetches,
    and the cookies servers set (sent back to them on later requests).

    ``verify``: True checks certificates against certifi's CAs (the system's without certifi),
    a path names a CA bundle file or directory instead, False turns checking off.
    """

    def __init__(self) -> None:
        self.cookies = http.cookiejar.CookieJar()
        # No environment proxies: they would hide the address connected to from the guard.
        self._pools = urllib3.PoolManager(num_pools=HOST_POOLS, maxsize=POOL_SIZE)
        self._pools.pool_classes_by_scheme = {"http": _GuardedHTTPPool, "https": _GuardedHTTPSPool}
        self.verify = True

    @property
    def verify(self) -> bool | str:
        return self._verify

    @verify.setter
    def verify(self, verify: bool | str) -> None:
        self._verify = verify
        # One TLS context for every connection: loading the CA bundle costs ~10 ms of CPU.
        self._pools.connection_pool_kw["ssl_context"] = _tls_context(verify)
        self._pools.clear()  # no connection made under the old trust settings is reused

    def pool(self, scheme: str, host: str, port: int | None) -> HTTPConnectionPool:
        return self._pools.connection_from_host(host, port, scheme)

    def close(self) -> None:
        self._pools.clear()

    def __enter__(self) -> Session:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def make_session() -> Session:
    """A session whose connections apply the SSRF guard, pooled for concurrent fetches."""
    return Session()


def _tls_context(verify: bool | str) -> ssl.SSLContext:
    context = create_urllib3_context(cert_reqs=ssl.CERT_REQUIRED if verify else ssl.CERT_NONE)
    if verify is True:
        bundle = _certifi_bundle()
        if bundle is None:
            context.load_default_certs()
        else:
            context.load_verify_locations(cafile=bundle)
    elif verify and os.path.isdir(verify):
        context.load_verify_locations(capath=verify)
    elif verify:
        context.load_verify_locations(cafile=verify)
    return context


def _certifi_bundle() -> str | None:
    try:
        import certifi
    except ImportError:
        return None
    return str(certifi.where())


@functools.lru_cache(maxsize=4096)  # feeds live on a few thousand addresses at most
def is_public_address(address: str) -> bool:
    """True for a globally routable unicast address; False for private, loopback, link-local,
    CGNAT, unique-local, multicast, unspecified, reserved (and IPv4-mapped forms of these)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        return False
    return ip.is_global and not (
        ip.is_multicast or ip.is_reserved or ip.is_unspecified or ip.is_link_local
    )


def fetch(
    request: FetchRequest,
    session: Session,
    *,
    resolve: Resolver | None = None,
    public_addresses: frozenset[str] = frozenset(),
    configured_url: str | None = None,
) -> Fetched | NotModified:
    """GET ``request.url`` within the request's limits.

    ``resolve`` maps (host, port) to IP addresses (default: the system resolver).
    ``public_addresses`` are treated as public by the SSRF guard whatever their range:
    tests use it to give a loopback server the role of a public origin.
    ``configured_url`` is the URL the admin wrote when ``request.url`` is where permanent
    redirects led: whether *it* is on a private address decides if private targets are
    allowed, so a moved public source never reaches into a private network.
    """
    if not isinstance(session, Session):
        raise ValueError("fetch() needs a session made by make_session()")
    exchange = _Exchange(resolve or _system_resolve, public_addresses, request.timeout)
    try:
        origin_private = None
        if configured_url is not None and configured_url != request.url:
            origin_private = _on_private_address(configured_url, exchange)
        return _follow(request, session, exchange, origin_private)
    finally:
        exchange.close()


def _on_private_address(url: str, exchange: _Exchange) -> bool:
    """True when every address of ``url``'s host is non-public (unresolvable counts as public,
    the safe side)."""
    if not _is_http_url(url):
        return False
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        addresses = [str(ipaddress.ip_address(host))]
    except ValueError:
        try:
            addresses = exchange.resolve(host, port)
        except OSError:
            return False
    return bool(addresses) and not any(exchange.is_public(a) for a in addresses)


# --------------------------------------------------------------------------- the exchange


class _AddressRefused(Exception):
    """Raised inside a connection; deliberately not an OSError so urllib3 lets it through."""

    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__(f"address {address} refused")


class _Exchange:
    """One fetch: the resolver, the address policy and the deadline, watched by the watchdog.

    The exchange holds a duplicate of every socket the fetch uses; shutting a duplicate down
    ends any blocked read on the original, including a TLS handshake or header read.
    """

    def __init__(self, resolve: Resolver, public_addresses: frozenset[str], timeout: float):
        self.resolve = resolve
        self.public_addresses = public_addresses
        self.started = time.monotonic()
        self.deadline = self.started + timeout
        self.expired = False
        self.closed = False
        self._lock = threading.Lock()
        self._watched: list[socket.socket] = []
        _watchdog.add(self)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def elapsed_ms(self) -> int:
        return int((time.monotonic() - self.started) * 1000)

    def is_public(self, address: str) -> bool:
        return address in self.public_addresses or is_public_address(address)

    def watch(self, sock: socket.socket) -> None:
        try:
            dup = socket.fromfd(sock.fileno(), sock.family, sock.type)
        except OSError:
            return
        with self._lock:
            self._watched.append(dup)
            if self.expired:
                _shutdown(dup)

    def expire(self) -> None:
        with self._lock:
            if self.closed:
                return
            self.expired = True
            for sock in self._watched:
                _shutdown(sock)

    def close(self) -> None:
        with self._lock:
            self.closed = True
            for sock in self._watched:
                sock.close()
            self._watched.clear()


class _Watchdog:
    """One thread expires every fetch at its deadline (starting a timer thread per fetch
    costs more CPU than a whole 304). Closed exchanges are dropped when their deadline comes."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._wakeup = threading.Condition()
        self._due: list[tuple[float, int, _Exchange]] = []
        self._order = itertools.count()  # ties never compare exchanges
        self._thread: threading.Thread | None = None

    def add(self, exchange: _Exchange) -> None:
        with self._wakeup:
            heapq.heappush(self._due, (exchange.deadline, next(self._order), exchange))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="fetch-watchdog")
                self._thread.daemon = True
                self._thread.start()
            elif self._due[0][2] is exchange:  # earlier than the deadline being waited for
                self._wakeup.notify()

    def _run(self) -> None:
        with self._wakeup:
            while True:
                if not self._due:
                    self._wakeup.wait()
                    continue
                delay = self._due[0][0] - time.monotonic()
                if delay > 0:
                    self._wakeup.wait(delay)
                    continue
                heapq.heappop(self._due)[2].expire()


_watchdog = _Watchdog()
# A forked child has no watchdog thread: it starts its own.
os.register_at_fork(after_in_child=_watchdog.reset)


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


@dataclass
class _Hop:
    """One request of the exchange; ``restrict`` refuses non-public addresses."""

    exchange: _Exchange
    restrict: bool
    peer: str | None = None  # the address connected to

    def allows(self, address: str) -> bool:
        return not self.restrict or self.exchange.is_public(address)


# The hop being sent by this thread; read by the connection classes below.
_current_hop: contextvars.ContextVar[_Hop | None] = contextvars.ContextVar(
    "aggregator_fetch_hop", default=None
)


def _system_resolve(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class _GuardedHTTPConnection(HTTPConnection):
    """Resolves, checks and connects to the checked address (no second DNS lookup)."""

    _peer: str | None = None
    _watched_by: _Exchange | None = None

    def _new_conn(self) -> socket.socket:
        hop = _current_hop.get()
        if hop is None:
            return super()._new_conn()
        host = self._dns_host
        try:
            ipaddress.ip_address(host)
            addresses = [host]
        except ValueError:
            try:
                addresses = hop.exchange.resolve(host, self.port)
            except OSError as e:
                error = e if isinstance(e, socket.gaierror) else socket.gaierror(str(e))
                raise urllib3.exceptions.NameResolutionError(self.host, self, error) from e
        if not addresses:
            error = socket.gaierror(f"no address for {host}")
            raise urllib3.exceptions.NameResolutionError(self.host, self, error)
        allowed = [a for a in addresses if hop.allows(a)]
        if not allowed:
            raise _AddressRefused(addresses[0])

        last_error: OSError | None = None
        for address in allowed:
            timeout = self.timeout
            remaining = hop.exchange.remaining()
            if isinstance(timeout, int | float):
                timeout = min(timeout, remaining)
            if remaining <= 0:
                break
            try:
                sock = create_connection(
                    (address, self.port),
                    timeout,
                    source_address=self.source_address,
                    socket_options=self.socket_options,
                )
            except OSError as e:
                last_error = e
                continue
            self._peer = hop.peer = address
            self._watched_by = hop.exchange
            hop.exchange.watch(sock)
            return sock
        if last_error is None or isinstance(last_error, TimeoutError):
            raise urllib3.exceptions.ConnectTimeoutError(
                self, f"Connection to {self.host} timed out"
            ) from last_error
        raise urllib3.exceptions.NewConnectionError(
            self, f"Failed to establish a new connection: {last_error}"
        ) from last_error

    def request(self, *args: Any, **kwargs: Any) -> None:
        hop = _current_hop.get()
        if hop is not None and self.sock is not None:
            # A pooled connection: it was checked under another hop's policy.
            peer = self._peer or str(self.sock.getpeername()[0])
            if not hop.allows(peer):
                raise _AddressRefused(peer)
            hop.peer = peer
            if self._watched_by is not hop.exchange:
                self._watched_by = hop.exchange
                hop.exchange.watch(self.sock)
        super().request(*args, **kwargs)


class _GuardedHTTPSConnection(_GuardedHTTPConnection, HTTPSConnection):
    """TLS keeps the host name for SNI and certificate checks; only the TCP target is pinned."""


class _GuardedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


# --------------------------------------------------------------------------- redirects


def _follow(
    request: FetchRequest,
    session: Session,
    exchange: _Exchange,
    origin_private: bool | None = None,
) -> Fetched | NotModified:
    url = request.url
    if not _is_http_url(url):
        raise FetchError(ErrorKind.BAD_URL, f"not an http(s) URL: {url}", url=url)
    permanent = True  # every hop so far was 301/308
    # None: request.url is the configured URL, judged by the address it connects to.
    first_private = bool(origin_private)
    for hop in range(request.max_redirects + 1):
        # The configured URL is fetched as written; if it is private, the admin chose that
        # network and redirects may stay in it. A moved URL is checked like a redirect.
        checked = hop > 0 or origin_private is not None
        restrict = checked and not (request.allow_private or first_private)
        moved = url if hop > 0 and permanent else None
        response, peer = _send(request, session, exchange, url, restrict, moved)
        if hop == 0 and origin_private is None:
            first_private = peer is not None and not exchange.is_public(peer)
        try:
            status = response.status
            if status not in _REDIRECTS:
                return _finish(request, response, exchange, url, moved)
            target = _redirect_target(response, url)
        finally:
            # A body read to its end has already returned the connection to the pool; any
            # other (a redirect or error body is never read) is dropped with its connection.
            response.close()
        log.debug("redirect status=%d from=%s to=%s", status, url, target)
        permanent = permanent and status in _PERMANENT
        url = target
    raise FetchError(
        ErrorKind.TOO_MANY_REDIRECTS, f"more than {request.max_redirects} redirects", url=url
    )


def _is_http_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)


def _redirect_target(response: BaseHTTPResponse, url: str) -> str:
    location = response.headers.get("location")
    status = response.status
    if not location:
        raise FetchError(
            ErrorKind.HTTP, f"HTTP {status} redirect without a Location", url=url, status=status
        )
    # http.client decodes header bytes as latin-1; servers usually mean UTF-8.
    with contextlib.suppress(UnicodeError):
        location = location.encode("latin-1").decode("utf-8")
    target = _requote(urljoin(url, location.strip()))
    if not _is_http_url(target):
        raise FetchError(
            ErrorKind.BAD_URL, f"redirect to a non-HTTP URL refused: {target}", url=url
        )
    return target


def _requote(uri: str) -> str:
    """Percent-encode what may not appear in a URL, keep valid escapes (unescaping those of
    unreserved characters); with an invalid escape, ``%`` itself is encoded."""
    parts = uri.split("%")
    try:
        for i in range(1, len(parts)):
            code = parts[i][:2]
            char = chr(int(code, 16)) if len(code) == 2 and code.isalnum() else ""
            parts[i] = char + parts[i][2:] if char in _UNRESERVED else "%" + parts[i]
    except ValueError:
        return quote(uri, safe="!#$&'()*+,/:;=?@[]~")
    return quote("".join(parts), safe="!#$%&'()*+,/:;=?@[]~")


def _send(
    request: FetchRequest,
    session: Session,
    exchange: _Exchange,
    url: str,
    restrict: bool,
    moved: str | None,
) -> tuple[BaseHTTPResponse, str | None]:
    remaining = exchange.remaining()
    if remaining <= 0:
        raise _timeout(request, url, moved)
    hop = _Hop(exchange, restrict)
    token = _current_hop.set(hop)
    try:
        target = parse_url(url)
        pool = session.pool(target.scheme or "http", target.host or "", target.port)
        response = pool.urlopen(
            "GET",
            _requote(target.request_uri),
            headers=_headers(request, session, url, target.auth),
            retries=_NO_RETRIES,
            redirect=False,
            timeout=Timeout(connect=min(request.connect_timeout, remaining), read=remaining),
            preload_content=False,
            decode_content=True,
        )
    except _AddressRefused as e:
        message = f"redirect to private address {e.address} refused"
        raise FetchError(ErrorKind.BLOCKED, message, url=url) from e
    except _FOREIGN as e:
        raise _classify(e, request, exchange, url, moved) from e
    finally:
        _current_hop.reset(token)
    if "set-cookie" in response.headers or "set-cookie2" in response.headers:
        # The jar reads the headers through response.info().get_all(), which urllib3 offers.
        session.cookies.extract_cookies(response, urllib.request.Request(url))  # type: ignore[arg-type]
    return response, hop.peer


def _headers(
    request: FetchRequest, session: Session, url: str, userinfo: str | None
) -> dict[str, str]:
    headers = {
        "User-Agent": request.user_agent or f"aggregator/{__version__}",
        "Accept": ACCEPT,
        "Accept-Encoding": ACCEPT_ENCODING,
    }
    if request.etag:
        headers["If-None-Match"] = request.etag
    if request.last_modified:
        headers["If-Modified-Since"] = request.last_modified
    if userinfo and ":" in userinfo:  # user:password written in the URL: Basic authentication
        user, _, password = userinfo.partition(":")
        credentials = f"{unquote(user)}:{unquote(password)}"
        try:
            encoded = credentials.encode("latin-1")
        except UnicodeEncodeError:
            encoded = credentials.encode()
        headers["Authorization"] = "Basic " + base64.b64encode(encoded).decode("ascii")
    if len(session.cookies):
        carrier = urllib.request.Request(url)
        session.cookies.add_cookie_header(carrier)
        cookie = carrier.get_header("Cookie")
        if cookie:
            headers["Cookie"] = cookie
    return headers


# --------------------------------------------------------------------------- the final response


def _finish(
    request: FetchRequest,
    response: BaseHTTPResponse,
    exchange: _Exchange,
    url: str,
    moved: str | None,
) -> Fetched | NotModified:
    status = response.status
    headers = {name.lower(): value for name, value in response.headers.itermerged()}
    etag = headers.get("etag")
    last_modified = headers.get("last-modified")
    if status == 304:
        # A 304 has no body: reading its end returns the connection to the pool for the next
        # poll. One claiming a chunked body is dropped instead, as reading it could hang.
        if not response.chunked:
            response.drain_conn()
        return NotModified(
            url=url,
            headers=headers,
            etag=etag,
            last_modified=last_modified,
            permanent_url=moved,
            elapsed_ms=exchange.elapsed_ms(),
        )
    if not 200 <= status < 300:
        raise _status_error(status, headers, url, moved)
    try:
        content = _read_body(response, request, exchange, url, moved)
    except _FOREIGN as e:
        raise _classify(e, request, exchange, url, moved) from e
    return Fetched(
        url=url,
        status=status,
        content=content,
        headers=headers,
        etag=etag,
        last_modified=last_modified,
        permanent_url=moved,
        elapsed_ms=exchange.elapsed_ms(),
    )


def _read_body(
    response: BaseHTTPResponse,
    request: FetchRequest,
    exchange: _Exchange,
    url: str,
    moved: str | None,
) -> bytes:
    cap = request.max_bytes
    length = response.headers.get("content-length", "")
    encoded = response.headers.get("content-encoding", "identity").lower() != "identity"
    if not encoded and length.isdigit() and int(length) > cap:
        raise _too_large(request, url, moved)
    chunks: list[bytes] = []
    total = 0
    # urllib3 inflates at most the requested amount per read, so a compression bomb
    # never holds more than one chunk beyond what is kept.
    for chunk in response.stream(_CHUNK, decode_content=True):
        total += len(chunk)
        if total > cap:
            raise _too_large(request, url, moved)
        if exchange.expired:
            break
        chunks.append(chunk)
    if exchange.expired:  # the watchdog may end a body early: never return it as complete
        raise _timeout(request, url, moved)
    return b"".join(chunks)


def _status_error(status: int, headers: dict[str, str], url: str, moved: str | None) -> FetchError:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "(unknown status)"
    message = f"HTTP {status} {phrase}"
    retry_after = None
    if status == 404:
        kind = ErrorKind.NOT_FOUND
    elif status == 410:
        kind = ErrorKind.GONE
    elif status in (429, 503):
        kind = ErrorKind.RATE_LIMITED
        retry_after = headers.get("retry-after")
        if retry_after is not None:
            message += f" (Retry-After: {retry_after})"
    elif 500 <= status < 600:
        kind = ErrorKind.SERVER
    else:
        kind = ErrorKind.HTTP
    return FetchError(
        kind, message, url=url, status=status, retry_after=retry_after, permanent_url=moved
    )


def _too_large(request: FetchRequest, url: str, moved: str | None) -> FetchError:
    message = f"response larger than {_size(request.max_bytes)}"
    return FetchError(ErrorKind.TOO_LARGE, message, url=url, permanent_url=moved)


def _timeout(request: FetchRequest, url: str, moved: str | None) -> FetchError:
    message = f"timed out after {request.timeout:.1f} s"
    return FetchError(ErrorKind.TIMEOUT, message, url=url, permanent_url=moved)


def _size(n: int) -> str:
    value = float(n)
    for unit in ("bytes", "KB", "MB"):
        if value < 1024:
            return f"{value:.3g} {unit}"
        value /= 1024
    return f"{value:.3g} GB"


# --------------------------------------------------------------------------- foreign errors


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception and everything it wraps (urllib3 nests several levels)."""
    seen: set[int] = set()
    stack = [exc]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        nested = [current.__cause__, current.__context__, getattr(current, "reason", None)]
        nested += list(current.args)
        stack.extend(e for e in nested if isinstance(e, BaseException))


def _classify(
    exc: BaseException, request: FetchRequest, exchange: _Exchange, url: str, moved: str | None
) -> FetchError:
    if exchange.expired:
        return _timeout(request, url, moved)
    causes = list(_causes(exc))

    def first(*types: type[BaseException]) -> BaseException | None:
        return next((c for c in causes if isinstance(c, types)), None)

    def error(kind: ErrorKind, message: str) -> FetchError:
        return FetchError(kind, message, url=url, permanent_url=moved)

    host = urlsplit(url).hostname or url
    if first(urllib3.exceptions.NameResolutionError, socket.gaierror):
        return error(ErrorKind.DNS, f"DNS lookup failed for {host}")
    tls = first(ssl.SSLError, ssl.CertificateError)
    if tls is not None:
        return error(ErrorKind.TLS, f"TLS error: {_tls_reason(tls)}")
    if first(ConnectionRefusedError):
        return error(ErrorKind.CONNECTION, "connection refused")
    if first(ConnectionResetError):
        return error(ErrorKind.CONNECTION, "connection reset")
    timed_out = first(
        TimeoutError, urllib3.exceptions.ConnectTimeoutError, urllib3.exceptions.ReadTimeoutError
    )
    if timed_out is not None and not isinstance(timed_out, urllib3.exceptions.NewConnectionError):
        seconds = (time.monotonic() - exchange.started) or request.timeout
        return error(ErrorKind.TIMEOUT, f"timed out after {seconds:.1f} s")
    if first(urllib3.exceptions.DecodeError):
        return error(ErrorKind.HTTP, "the response body could not be decompressed")
    if first(urllib3.exceptions.LocationValueError, urllib3.exceptions.URLSchemeUnknown):
        return error(ErrorKind.BAD_URL, f"invalid URL: {url}")
    if first(http.client.IncompleteRead, urllib3.exceptions.ProtocolError):
        return error(ErrorKind.CONNECTION, "connection broken before the response was complete")
    os_error = first(OSError)
    detail = getattr(os_error, "strerror", None) or str(os_error or exc) or type(exc).__name__
    return error(ErrorKind.CONNECTION, f"connection failed: {detail}")


def _tls_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = exc.verify_message or ""
        return f"certificate verify failed: {detail}".rstrip(": ")
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str):
        return reason.replace("_", " ").lower()
    return str(exc)
