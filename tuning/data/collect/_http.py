"""The HTTP client collect talks through: bounded retries and backoff, size limits, no secret in any reason.

Everything a search API or an image host sends is untrusted, so this is where it is checked first: a status
code decides whether a retry can help (429, 5xx, timeouts and dropped connections only), a body larger than
``max_bytes`` is abandoned mid-stream, and a search endpoint may not redirect (a custom key header would
follow the redirect to any host). Every reason that leaves this module has the key replaced by ``***``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any

import requests

_UNTYPED = {"", "application/octet-stream", "binary/octet-stream"}


class RequestFailed(Exception):
    """A request or image that gave up; ``reason`` is short, categorical and never holds the key."""

    def __init__(self, reason: str, *, retry: bool = False, wait: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry = retry
        self.wait = wait


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


class Http:
    """GETs with bounded retries; one requests.Session per thread because Session is not thread-safe."""

    def __init__(self, *, timeout: float, retries: int, backoff: float, max_wait: float, max_redirects: int,
                 user_agent: str, secret: str | None, max_bytes: int) -> None:
        self.timeout = (min(timeout, 10.0), timeout)  # (connect, read); a read gap longer than this gives up
        self.deadline = max(60.0, timeout * 6)  # a host dripping bytes slower than the read timeout still ends
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
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def close(self) -> None:
        with self._lock:
            for session in self._sessions:
                session.close()
            self._sessions.clear()

    def _attempts(self, once: Callable[[], Any]) -> Any:
        for attempt in range(self.retries + 1):
            try:
                return once()
            except RequestFailed as exc:
                if not exc.retry or attempt == self.retries:
                    raise RequestFailed(redact(exc.reason, self.secret)) from None
                pause = exc.wait if exc.wait is not None else self.backoff * 2**attempt
                time.sleep(min(max(pause, 0.0), self.max_wait))
        raise AssertionError("unreachable")

    def _get(self, url: str, *, params: dict[str, Any] | None = None, headers: dict[str, str] | None = None,
             stream: bool = False, allow_redirects: bool = True) -> requests.Response:
        try:
            resp = self.session().get(url, params=params, headers=headers, stream=stream, timeout=self.timeout,
                                      allow_redirects=allow_redirects)
        except requests.TooManyRedirects:
            raise RequestFailed("redirect loop") from None
        except requests.Timeout:
            raise RequestFailed("timeout", retry=True) from None
        except requests.ConnectionError:
            raise RequestFailed("connection error", retry=True) from None
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

        def once() -> Any:
            resp = self._get(url, params=params, headers=headers, allow_redirects=False)
            with resp:
                if resp.is_redirect:
                    raise RequestFailed("the search endpoint redirected; pass the final address as --endpoint")
                try:
                    return resp.json()
                except ValueError:
                    raise RequestFailed("bad response: not JSON") from None

        return self._attempts(once)

    def download(self, url: str) -> bytes:
        """The body of an image URL, abandoned as soon as it is known to be too large or not an image."""

        def once() -> bytes:
            resp = self._get(url, stream=True)
            with resp:
                ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
                if not ctype.startswith("image/") and ctype not in _UNTYPED:
                    raise RequestFailed(f"wrong content type: {ctype[:40]}")
                declared = resp.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > self.max_bytes:
                    raise RequestFailed("too large")
                body = bytearray()
                started = time.monotonic()
                try:
                    for chunk in resp.iter_content(64 * 1024):
                        body += chunk
                        if len(body) > self.max_bytes:
                            raise RequestFailed("too large")
                        if time.monotonic() - started > self.deadline:
                            raise RequestFailed("too slow")
                except requests.exceptions.ChunkedEncodingError:
                    raise RequestFailed("truncated download", retry=True) from None
                except requests.ConnectionError as exc:
                    timed_out = "timed out" in str(exc).lower()
                    raise RequestFailed("timeout" if timed_out else "connection error", retry=True) from None
                except requests.RequestException as exc:
                    raise RequestFailed(f"request failed: {type(exc).__name__}") from None
                return bytes(body)

        return self._attempts(once)
