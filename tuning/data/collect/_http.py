"""The HTTP client collect talks through: bounded retries and backoff, one deadline, size limits, no secret leaks.

Everything a search API or an image host sends is untrusted, so this is where it is checked first: a status
code decides whether a retry can help (429, 5xx, timeouts and dropped connections only), a body larger than
``max_bytes`` is abandoned mid-stream, a request ends at its deadline however slowly the bytes come, and a
search endpoint may not redirect (a custom key header would follow the redirect to any host). Every reason
that leaves this module has the key replaced by ``***``.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.poolmanager import pool_classes_by_scheme as _PLAIN_POOLS
from urllib3.response import BaseHTTPResponse

_UNTYPED = {"", "application/octet-stream", "binary/octet-stream"}


class RequestFailed(Exception):
    """A request or image that gave up; ``reason`` is short, categorical and never holds the key.

    ``timed_out`` marks a final failure that was the server not answering in time (the read gaps of every try,
    or the request's overall deadline), which a search treats as fatal; ``url`` is the address asked (no query).
    """

    def __init__(self, reason: str, *, retry: bool = False, wait: float | None = None, timed_out: bool = False,
                 url: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry = retry
        self.wait = wait
        self.timed_out = timed_out
        self.url = url


def redact(text: str, secret: str | None) -> str:
    """Defence in depth: whatever a server echoes back, the key never leaves the collector."""
    return text.replace(secret, "***") if secret else text


def default_user_agent() -> str:
    """Wikimedia and Openverse ask clients to say who they are; a generic library agent gets throttled."""
    try:
        from importlib.metadata import version

        ours = version("tuning")
    except Exception:  # noqa: BLE001 - running from a source tree without metadata
        ours = "dev"
    return f"tuning-dataset-collector/{ours} (image dataset collection for CNN studies) requests/{requests.__version__}"


def retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date); None when absent or garbled."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


#: The default wait for a connection or the next bytes within one try (longer when the deadline shared
#: among the tries is; never longer than the deadline), so a stalled try leaves time for another.
READ_TIMEOUT = 10.0
_CURRENT = threading.local()  # the deadline of the request this thread is making, for the connections to join


class _Deadline:
    """One request's overall time limit, retries included, enforced by cutting its sockets when it passes.

    requests' timeouts only bound each wait for bytes, so a server answering one byte every few seconds (in the
    status line, the headers or the body) would hold a request for ever. A timer shuts the sockets the request
    opened or reused down when the deadline passes, which ends whatever read is blocked on them, in any phase.
    (A TLS handshake is cut only by its read timeout: its socket is registered once the handshake is done.)
    """

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds
        self.cut = False
        self._socks: list[socket.socket] = []
        self._over = False
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def left(self) -> float:
        return self.end - time.monotonic()

    def watch(self, sock: socket.socket | None) -> None:
        if sock is None:
            return
        with self._lock:
            if self.cut:
                _shutdown(sock)
            elif not self._over and not any(s is sock for s in self._socks):
                self._socks.append(sock)

    def _fire(self) -> None:
        with self._lock:
            if self._over:
                return
            self.cut = True
            for sock in self._socks:
                _shutdown(sock)

    def __enter__(self) -> _Deadline:
        _CURRENT.deadline = self
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:  # after this the timer cuts nothing: a pooled connection is safe for the next request
            self._over = True
        self._timer.cancel()
        _CURRENT.deadline = None


def _shutdown(sock: socket.socket) -> None:
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the plain call: an SSLSocket's own drops its TLS state
    except OSError:
        pass  # already closed


def _watch(sock: socket.socket | None) -> None:
    deadline = getattr(_CURRENT, "deadline", None)
    if deadline is not None:
        deadline.watch(sock)


class _WatchedHTTPConnection(HTTPConnection):
    """Registers its socket with the running request's deadline: when it is made, and when it is reused."""

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        _watch(sock)
        return sock

    def getresponse(self) -> BaseHTTPResponse:  # type: ignore[override]  # the same signature as urllib3's
        _watch(self.sock)
        return super().getresponse()


class _WatchedHTTPSConnection(HTTPSConnection):
    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        _watch(sock)
        return sock

    def getresponse(self) -> BaseHTTPResponse:  # type: ignore[override]  # as above
        _watch(self.sock)
        return super().getresponse()


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_WATCHED_POOLS = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class _Adapter(HTTPAdapter):
    """requests' adapter, with connections a deadline can cut (direct and through an HTTP proxy; SOCKS as is)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _WATCHED_POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if manager.pool_classes_by_scheme is _PLAIN_POOLS:
            manager.pool_classes_by_scheme = _WATCHED_POOLS
        return manager


class Http:
    """GETs with bounded retries; one requests.Session per thread because Session is not thread-safe.

    ``timeout`` is the most one request may take in all, every try, wait and slow read included, so a host
    that never answers, or answers a byte at a time, costs at most that. Within it each try gives up after
    ``read_timeout`` seconds without data, leaving time to try again.
    """

    def __init__(self, *, timeout: float, read_timeout: float, retries: int, backoff: float, max_wait: float,
                 max_redirects: int, user_agent: str, secret: str | None, max_bytes: int) -> None:
        self.timeout, self.read_timeout = timeout, min(read_timeout, timeout)
        self.retries, self.backoff, self.max_wait = max(0, retries), backoff, max_wait
        self.max_redirects, self.user_agent, self.secret, self.max_bytes = max_redirects, user_agent, secret, max_bytes
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()

    def session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers["User-Agent"] = self.user_agent
            session.max_redirects = self.max_redirects
            for prefix in ("http://", "https://"):
                session.mount(prefix, _Adapter())
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def close(self) -> None:
        with self._lock:
            for session in self._sessions:
                session.close()
            self._sessions.clear()

    def _attempts(self, url: str, once: Callable[[float], Any]) -> Any:
        """``once(read_timeout)`` until it succeeds, fails for good, or the request's deadline passes."""
        last: RequestFailed | None = None
        with _Deadline(self.timeout) as deadline:
            for attempt in range(self.retries + 1):
                left = deadline.left()
                if left <= 0:
                    break
                try:
                    result = once(min(self.read_timeout, left))
                except RequestFailed as exc:
                    last = exc
                else:
                    last = None
                    if not deadline.cut:
                        return result
                if deadline.cut:
                    break  # whatever came back was cut short by the deadline
                assert last is not None
                if not last.retry or attempt == self.retries:
                    raise self._failed(url, last.reason, timed_out=last.timed_out)
                pause = min(max(self.backoff * 2**attempt if last.wait is None else last.wait, 0.0), self.max_wait)
                if pause >= deadline.left():
                    break  # the next try could not even start in time
                time.sleep(pause)
        if not deadline.cut and last is not None and not last.timed_out:  # it answered, with errors, till time ran out
            raise self._failed(url, last.reason)
        raise self._failed(url, f"timeout: no complete answer within {self.timeout:g}s", timed_out=True)

    def _failed(self, url: str, reason: str, *, timed_out: bool = False) -> RequestFailed:
        return RequestFailed(redact(reason, self.secret), timed_out=timed_out, url=redact(url, self.secret))

    def _get(self, url: str, *, read_timeout: float, params: dict[str, Any] | None = None,
             headers: dict[str, str] | None = None, stream: bool = False,
             allow_redirects: bool = True) -> requests.Response:
        try:
            resp = self.session().get(url, params=params, headers=headers, stream=stream,
                                      timeout=(read_timeout, read_timeout), allow_redirects=allow_redirects)
        except requests.TooManyRedirects:
            raise RequestFailed("redirect loop") from None
        except (requests.Timeout, requests.ConnectionError) as exc:
            raise _dropped(exc) from None
        except requests.RequestException as exc:
            raise RequestFailed(f"request failed: {type(exc).__name__}") from None
        code = resp.status_code
        if code == 429 or code >= 500:
            wait_s = retry_after(resp.headers.get("Retry-After")) if code in (429, 503) else None
            resp.close()
            raise RequestFailed(f"HTTP {code}", retry=True, wait=wait_s)
        if code >= 400:
            resp.close()
            raise RequestFailed(f"HTTP {code}")
        return resp

    def get_json(self, url: str, *, params: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
        """A search response. Redirects are refused: a custom key header would follow them to any host."""

        def once(read_timeout: float) -> Any:
            resp = self._get(url, read_timeout=read_timeout, params=params, headers=headers, allow_redirects=False)
            with resp:
                if resp.is_redirect:
                    raise RequestFailed("the search endpoint redirected; pass the final address as --endpoint")
                try:
                    return resp.json()
                except ValueError:
                    raise RequestFailed("bad response: not JSON") from None

        return self._attempts(url, once)

    def download(self, url: str) -> bytes:
        """The body of an image URL, abandoned as soon as it is known to be too large or not an image."""

        def once(read_timeout: float) -> bytes:
            resp = self._get(url, read_timeout=read_timeout, stream=True)
            with resp:
                ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
                if not ctype.startswith("image/") and ctype not in _UNTYPED:
                    raise RequestFailed(f"wrong content type: {ctype[:40]}")
                declared = resp.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > self.max_bytes:
                    raise RequestFailed("too large")
                body = bytearray()
                try:
                    for chunk in resp.iter_content(64 * 1024):
                        body += chunk
                        if len(body) > self.max_bytes:
                            raise RequestFailed("too large")
                except requests.exceptions.ChunkedEncodingError:
                    raise RequestFailed("truncated download", retry=True) from None
                except (requests.Timeout, requests.ConnectionError) as exc:
                    raise _dropped(exc) from None
                except requests.RequestException as exc:
                    raise RequestFailed(f"request failed: {type(exc).__name__}") from None
                return bytes(body)

        return self._attempts(url, once)


def _dropped(exc: requests.RequestException) -> RequestFailed:
    """A try that timed out or lost its connection: both worth another try (a read timeout mid-body arrives
    as a ConnectionError wrapping urllib3's ReadTimeoutError)."""
    if isinstance(exc, requests.Timeout) or "timed out" in str(exc).lower():
        return RequestFailed("timeout", retry=True, timed_out=True)
    return RequestFailed("connection error", retry=True)
