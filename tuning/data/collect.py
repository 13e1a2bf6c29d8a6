"""Collect labelled images from an image-search API into ``DIR/raw/<class>/`` with their provenance.

The study gathered about 1,000 images per class through the Bing Image Search API. That service was retired
in August 2025, so three request formats are spoken here: ``bing`` (for the compatible endpoints that remain),
``openverse`` and ``wikimedia`` (both keyless, and both say under which licence each image may be used).

Everything a search or an image host sends is untrusted input, checked once where it enters: search results
must be well-formed, an image URL never chooses its file name (names are a hash of the URL plus the extension
of the format PIL actually decoded), a body larger than ``max_bytes`` is abandoned mid-stream, and a file is
kept only if PIL decodes it completely. A bad image is skipped with a short reason, never a crash, and the
run ends with what it could get: a class whose results run out is reported short, not failed.

The manifest (``DIR/manifest.csv``) is the record of what was collected: a second run skips every URL already
in it and counts the files already in ``raw/<class>/`` toward the target, so an interrupted run resumes.
The API key travels only in the search request's header; it is never put in a URL, a reason, an error or
the manifest, and image downloads (to arbitrary hosts) never carry it.
"""

from __future__ import annotations

import hashlib
import html
import io
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from PIL import Image, UnidentifiedImageError

from tuning import _io
from tuning.data.images import image_files  # importing it also sets PIL's decompression-bomb limit
from tuning.data.manifest import EXCLUDED, MANIFEST_COLUMNS, describe_file, read_manifest, status_kind, write_manifest
from tuning.errors import DataError, UnknownNameError

PROVIDERS = ("bing", "openverse", "wikimedia")
DEFAULT_ENDPOINTS = {"openverse": "https://api.openverse.org", "wikimedia": "https://commons.wikimedia.org"}
KEY_ENV = "BING_SEARCH_KEY"
DEFAULT_MAX_BYTES = 20_000_000
#: Results asked for per search request (each API's usual maximum for an anonymous or basic client).
PAGE_SIZES = {"bing": 50, "openverse": 20, "wikimedia": 50}
#: A search that keeps returning pages is still stopped; 200 pages is far beyond any class's needs.
MAX_PAGES = 200
#: How often the manifest is rewritten while collecting, so a killed run loses little provenance.
SAVE_EVERY = 25

_EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif"}
_RASTER_MIMES = {"image/jpeg", "image/png", "image/gif", "image/webp", "image/bmp", "image/tiff"}
_BING_FORMATS = {"", "jpeg", "jpg", "png", "gif", "animatedgif", "webp", "bmp", "tiff"}
_UNTYPED = {"", "application/octet-stream", "binary/octet-stream"}
#: A class becomes a folder name, so it must be one: no separators, no leading dot, no control characters.
_SAFE_LABEL = re.compile(r"\w[\w .+&-]{0,63}")


@dataclass(frozen=True)
class Query:
    """One ``--query CLASS=TEXT``: search for ``text`` and file what it finds under ``label``."""

    label: str
    text: str


@dataclass(frozen=True)
class CollectProgress:
    """Sent after every image (saved or skipped) so a front end can draw a live line."""

    label: str
    saved: int
    target: int
    skipped: int


@dataclass
class CollectResult:
    """What collecting did: per-class counts, and every image skipped with its reason."""

    out: Path
    provider: str
    target: int
    saved: dict[str, int]
    new: dict[str, int]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    search_errors: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def manifest(self) -> Path:
        return self.out / "manifest.csv"

    @property
    def shortfall(self) -> dict[str, int]:
        """Images each class still lacks because the results ran out (0 when the target was reached)."""
        return {label: max(0, self.target - n) for label, n in self.saved.items()}

    def reasons(self) -> Counter[str]:
        """Skips per reason category (the text before any ``:`` detail), for a short summary."""
        return Counter(reason.split(":", 1)[0] for _, reason in self.skipped)


@dataclass(frozen=True)
class _Candidate:
    url: str
    license: str
    creator: str
    kind: str = ""  # the provider's declared type, checked before any download


@dataclass(frozen=True)
class _Outcome:
    url: str
    row: dict[str, str] | None = None
    reason: str = ""
    adopted: bool = False  # the file was already on disk (an interrupted run); it is counted already


class _Failed(Exception):
    """A request or image that gave up; ``reason`` is short, categorical and never holds the key."""

    def __init__(self, reason: str, *, retry: bool = False, wait: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry = retry
        self.wait = wait


def parse_query(spec: str) -> Query:
    """``"Action=fighting movie scenes"`` -> Query; the class must be usable as a folder name."""
    label, sep, text = spec.partition("=")
    label, text = label.strip(), text.strip()
    if not sep or not label or not text:
        raise DataError(f"--query '{spec}': write it as CLASS=SEARCH TEXT, "
                        f"e.g. --query \"Action=fighting movie scenes\"")
    if not _SAFE_LABEL.fullmatch(label) or label.rstrip(". ") != label:
        raise DataError(f"--query '{spec}': class '{label}' must be a plain folder name "
                        f"(letters, digits, space and . _ + & -, not starting with a dot)")
    return Query(label, text)


def collect(
    out: Path,
    queries: Sequence[str | Query],
    *,
    per_class: int = 1000,
    provider: str = "openverse",
    endpoint: str | None = None,
    api_key: str | None = None,
    timeout: float = 10.0,
    workers: int = 4,
    max_bytes: int = DEFAULT_MAX_BYTES,
    retries: int = 3,
    backoff: float = 0.5,
    max_wait: float = 30.0,
    max_redirects: int = 5,
    page_size: int | None = None,
    user_agent: str | None = None,
    progress: Callable[[CollectProgress], None] | None = None,
) -> CollectResult:
    """Download until every class has ``per_class`` images (or its results run out) and record them.

    ``api_key`` is passed in rather than read here so the caller decides where secrets come from; the CLI
    reads ``BING_SEARCH_KEY``. Retries (``retries``, exponential from ``backoff`` seconds, ``Retry-After``
    honoured up to ``max_wait``) cover 429, 5xx, timeouts and dropped connections only. ``page_size`` is the
    results per search request [each API's usual maximum].
    """
    started = time.perf_counter()
    out = Path(out)
    parsed = [q if isinstance(q, Query) else parse_query(q) for q in queries]
    if not parsed:
        raise DataError("no --query given; pass one or more --query CLASS=SEARCH TEXT")
    if provider not in PROVIDERS:
        raise UnknownNameError("provider", provider, PROVIDERS)
    page_size = page_size or PAGE_SIZES[provider]
    for name, value, low in (("--per-class", per_class, 1), ("--workers", workers, 1), ("--max-bytes", max_bytes, 1),
                             ("page_size", page_size, 1)):
        if value < low:
            raise DataError(f"{name} must be >= {low}, got {value}")
    if timeout <= 0:
        raise DataError(f"--timeout must be > 0 seconds, got {timeout}")
    base = _endpoint(provider, endpoint, api_key)
    search = _SEARCHES[provider]
    secret = api_key if provider == "bing" else None

    raw = out / "raw"
    rows = read_manifest(out) if (out / "manifest.csv").exists() else []
    known_urls = {r["source_url"] for r in rows if r["source_url"]}
    by_path = {r["path"]: r for r in rows}
    state = _State(hashes={r["sha256"] for r in rows if r["sha256"] and status_kind(r["status"]) not in EXCLUDED})
    labels = list(dict.fromkeys(q.label for q in parsed))
    result = CollectResult(out, provider, per_class, {}, {})
    http = _Http(timeout=timeout, retries=retries, backoff=backoff, max_wait=max_wait, max_redirects=max_redirects,
                 user_agent=user_agent or _user_agent(), secret=secret, max_bytes=max_bytes)
    new_rows: list[dict[str, str]] = []
    seen: set[str] = set()
    unsaved = 0

    def flush() -> None:
        nonlocal unsaved
        if unsaved:
            write_manifest(out, rows + new_rows)
            unsaved = 0

    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="collect") as pool:
            for label in labels:
                class_dir = raw / label
                saved = _count_existing(out, class_dir, by_path)
                result.new[label] = 0
                pages = _RoundRobin(
                    [(q.text, search(http, base, q.text, page_size, secret)) for q in parsed
                     if q.label == label], provider, result.search_errors)
                buffer: deque[_Candidate] = deque()
                inflight: dict[Future[_Outcome], _Candidate] = {}
                tell = _teller(progress, label, per_class, result)
                tell(saved)
                while saved < per_class:
                    while len(inflight) < workers and saved + len(inflight) < per_class:
                        if not buffer:
                            if inflight:
                                break  # fetch the next page only when the pool has nothing left to do
                            page = pages.next()
                            if page is None:
                                break
                            buffer.extend(page)
                            continue
                        cand = buffer.popleft()
                        reason = _precheck(cand, known_urls, seen, secret)
                        if reason:
                            result.skipped.append((_redact(cand.url, secret), reason))
                            tell(saved)
                            continue
                        seen.add(cand.url)
                        inflight[pool.submit(_fetch_one, http, out, class_dir, label, cand, state)] = cand
                    if not inflight:
                        break
                    done, _ = wait(inflight, return_when=FIRST_COMPLETED)
                    for fut in done:
                        inflight.pop(fut)
                        outcome = fut.result()
                        if outcome.row is None:
                            result.skipped.append((_redact(outcome.url, secret), _redact(outcome.reason, secret)))
                        else:
                            new_rows.append(outcome.row)
                            unsaved += 1
                            if not outcome.adopted:
                                saved += 1
                                result.new[label] += 1
                        tell(saved)
                    if unsaved >= SAVE_EVERY:
                        flush()
                result.saved[label] = saved
    finally:
        flush()
        http.close()
    if not any(result.new.values()) and result.search_errors and not any(result.saved.values()):
        query, reason = result.search_errors[0]
        raise DataError(f"{provider}: every search failed; first: '{query}': {reason}")
    result.seconds = time.perf_counter() - started
    return result


# ----- plumbing ------------------------------------------------------------------------------------------
def _endpoint(provider: str, endpoint: str | None, api_key: str | None) -> str:
    """The API base URL; Bing has no public default any more, and needs its key."""
    if provider == "bing":
        if not endpoint:
            raise DataError("bing needs --endpoint URL: Microsoft retired the public Bing Image Search API in "
                            "August 2025; give a compatible endpoint, or use --provider openverse or wikimedia")
        if not api_key:
            raise DataError(f"bing needs an API key: set the {KEY_ENV} environment variable")
    base = (endpoint or DEFAULT_ENDPOINTS[provider]).rstrip("/")
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DataError(f"--endpoint '{base}' must be an http:// or https:// URL")
    return base


def _user_agent() -> str:
    """Wikimedia and Openverse ask clients to say who they are; a generic library agent gets throttled."""
    try:
        from importlib.metadata import version

        ours = version("tuning")
    except Exception:  # noqa: BLE001 - running from a source tree without metadata
        ours = "dev"
    return f"tuning-dataset-collector/{ours} (image dataset collection for CNN studies) requests/{requests.__version__}"


def _redact(text: str, secret: str | None) -> str:
    """Defence in depth: whatever a server echoes back, the key never leaves this module."""
    return text.replace(secret, "***") if secret else text


def _teller(progress: Callable[[CollectProgress], None] | None, label: str, target: int,
            result: CollectResult) -> Callable[[int], None]:
    def tell(saved: int) -> None:
        if progress:
            progress(CollectProgress(label, saved, target, len(result.skipped)))

    return tell


def _count_existing(out: Path, class_dir: Path, by_path: dict[str, dict[str, str]]) -> int:
    """Image files already in ``raw/<class>/`` count toward the target unless the manifest excluded them."""
    if not class_dir.is_dir():
        return 0
    n = 0
    for path in image_files(class_dir):
        status = by_path.get(path.relative_to(out).as_posix(), {}).get("status", "")
        n += status_kind(status) not in EXCLUDED
    return n


def _precheck(cand: _Candidate, known: set[str], seen: set[str], secret: str | None) -> str:
    """Reasons to skip a result without downloading it (a URL carrying the key would put it in request logs)."""
    parts = urlsplit(cand.url)
    if parts.scheme not in ("http", "https") or not parts.hostname or (secret and secret in cand.url):
        return "bad URL"
    if cand.url in known:
        return "already collected"
    if cand.url in seen:
        return "duplicate URL"
    if cand.kind:
        return f"unsupported type: {cand.kind}"
    return ""


class _RoundRobin:
    """Pages from a class's queries in turn, so the images mix every query rather than exhausting the first.

    A search that fails stops only that query (recorded); a rejected key (401/403) stops the run, since every
    other request would fail the same way.
    """

    def __init__(self, searches: list[tuple[str, Iterator[list[_Candidate]]]], provider: str,
                 errors: list[tuple[str, str]]) -> None:
        self._active = deque(searches)
        self._provider = provider
        self._errors = errors

    def next(self) -> list[_Candidate] | None:
        while self._active:
            text, pages = self._active.popleft()
            try:
                page = next(pages)
            except StopIteration:
                continue
            except _Failed as exc:
                if exc.reason in ("HTTP 401", "HTTP 403"):
                    hint = f"; check {KEY_ENV}" if self._provider == "bing" else ""
                    raise DataError(f"{self._provider} search for '{text}' was refused ({exc.reason}){hint}") from None
                self._errors.append((text, exc.reason))
                continue
            self._active.append((text, pages))
            return page
        return None


@dataclass
class _State:
    """Content hashes shared by the download threads, so byte-identical images are kept once."""

    hashes: set[str]
    lock: threading.Lock = field(default_factory=threading.Lock)

    def claim(self, sha256: str) -> bool:
        with self.lock:
            if sha256 in self.hashes:
                return False
            self.hashes.add(sha256)
            return True


class _Http:
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
            except _Failed as exc:
                if not exc.retry or attempt == self.retries:
                    raise _Failed(_redact(exc.reason, self.secret)) from None
                pause = exc.wait if exc.wait is not None else self.backoff * 2**attempt
                time.sleep(min(max(pause, 0.0), self.max_wait))
        raise AssertionError("unreachable")

    def _get(self, url: str, *, params: dict[str, Any] | None = None, headers: dict[str, str] | None = None,
             stream: bool = False, allow_redirects: bool = True) -> requests.Response:
        try:
            resp = self.session().get(url, params=params, headers=headers, stream=stream, timeout=self.timeout,
                                      allow_redirects=allow_redirects)
        except requests.TooManyRedirects:
            raise _Failed("redirect loop") from None
        except requests.Timeout:
            raise _Failed("timeout", retry=True) from None
        except requests.ConnectionError:
            raise _Failed("connection error", retry=True) from None
        except requests.RequestException as exc:
            raise _Failed(f"request failed: {type(exc).__name__}") from None
        code = resp.status_code
        if code == 429 or code >= 500:
            wait_s = _retry_after(resp.headers.get("Retry-After")) if code in (429, 503) else None
            resp.close()
            raise _Failed(f"HTTP {code}", retry=True, wait=wait_s)
        if code >= 400:
            resp.close()
            raise _Failed(f"HTTP {code}")
        return resp

    def get_json(self, url: str, *, params: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
        """A search response. Redirects are refused: a custom key header would follow them to any host."""

        def once() -> Any:
            resp = self._get(url, params=params, headers=headers, allow_redirects=False)
            with resp:
                if resp.is_redirect:
                    raise _Failed("the search endpoint redirected; pass the final address as --endpoint")
                try:
                    return resp.json()
                except ValueError:
                    raise _Failed("bad response: not JSON") from None

        return self._attempts(once)

    def download(self, url: str) -> bytes:
        """The body of an image URL, abandoned as soon as it is known to be too large or not an image."""

        def once() -> bytes:
            resp = self._get(url, stream=True)
            with resp:
                ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
                if not ctype.startswith("image/") and ctype not in _UNTYPED:
                    raise _Failed(f"wrong content type: {ctype[:40]}")
                declared = resp.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > self.max_bytes:
                    raise _Failed("too large")
                body = bytearray()
                started = time.monotonic()
                try:
                    for chunk in resp.iter_content(64 * 1024):
                        body += chunk
                        if len(body) > self.max_bytes:
                            raise _Failed("too large")
                        if time.monotonic() - started > self.deadline:
                            raise _Failed("too slow")
                except requests.exceptions.ChunkedEncodingError:
                    raise _Failed("truncated download", retry=True) from None
                except requests.ConnectionError as exc:
                    timed_out = "timed out" in str(exc).lower()
                    raise _Failed("timeout" if timed_out else "connection error", retry=True) from None
                except requests.RequestException as exc:
                    raise _Failed(f"request failed: {type(exc).__name__}") from None
                return bytes(body)

        return self._attempts(once)


def _retry_after(value: str | None) -> float | None:
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


def _decode(data: bytes) -> str:
    """The file extension of a completely decodable raster image, or raise with the reason."""
    if not data:
        raise _Failed("empty body")
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt = img.format or ""
            img.load()
            if img.width < 1 or img.height < 1:
                raise _Failed("not an image: no pixels")
    except _Failed:
        raise
    except Image.DecompressionBombError:
        raise _Failed("not an image: too many pixels") from None
    except UnidentifiedImageError:
        raise _Failed("not an image") from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a reason to skip, never to crash
        text = str(exc).lower()
        raise _Failed("truncated image" if "truncated" in text or "broken data stream" in text
                      else f"not an image: {type(exc).__name__}") from None
    if fmt not in _EXTENSIONS:
        raise _Failed(f"unsupported format: {fmt or 'unknown'}")
    return _EXTENSIONS[fmt]


def _fetch_one(http: _Http, out: Path, class_dir: Path, label: str, cand: _Candidate, state: _State) -> _Outcome:
    """Download, check and atomically save one image (runs in a worker thread; never raises for bad input)."""
    stem = hashlib.sha256(cand.url.encode("utf-8")).hexdigest()[:24]
    try:
        leftover = _leftover(class_dir, stem)
        if leftover is not None:  # written by a run killed before it saved the manifest
            return _Outcome(cand.url, _row(out, leftover, label, cand), adopted=True)
        data = http.download(cand.url)
        ext = _decode(data)
        if not state.claim(hashlib.sha256(data).hexdigest()):
            return _Outcome(cand.url, reason="duplicate content")
        path = class_dir / f"{stem}{ext}"
        if not path.resolve().is_relative_to(class_dir.resolve()):
            return _Outcome(cand.url, reason="unsafe file name")  # cannot happen with a hex stem; kept as a guard
        with _io.atomic_path(path) as tmp:
            tmp.write_bytes(data)
        return _Outcome(cand.url, _row(out, path, label, cand))
    except _Failed as exc:
        return _Outcome(cand.url, reason=exc.reason)
    except OSError as exc:
        return _Outcome(cand.url, reason=f"write failed: {exc.strerror or type(exc).__name__}")


def _leftover(class_dir: Path, stem: str) -> Path | None:
    for ext in dict.fromkeys(_EXTENSIONS.values()):
        if (class_dir / f"{stem}{ext}").is_file():
            return class_dir / f"{stem}{ext}"
    return None


def _row(out: Path, path: Path, label: str, cand: _Candidate) -> dict[str, str]:
    """The manifest row prepare would write (hashes, size, status), plus where the image came from."""
    rel = path.relative_to(out).as_posix()
    row = describe_file(out, rel)
    row.update(path=rel, label=label, group="", source_url=cand.url, license=cand.license, creator=cand.creator)
    return {c: row.get(c, "") for c in MANIFEST_COLUMNS}


# ----- providers: each turns a query into pages of candidates, validating the response as it enters --------
def _text(value: Any, *, limit: int = 200) -> str:
    """A plain one-line string from an API field: HTML tags stripped, entities decoded, whitespace collapsed."""
    if not isinstance(value, str):
        return ""
    value = html.unescape(re.sub(r"<[^>]*>", " ", value))
    return " ".join(value.split())[:limit]


def _url(value: Any) -> str:
    """A URL field as sent (no HTML unescaping: ``&copy=`` in a query string is not an entity)."""
    return value.strip()[:2000] if isinstance(value, str) else ""


def _meta(meta: dict[str, Any], name: str) -> str:
    entry = meta.get(name)
    return _text(entry.get("value")) if isinstance(entry, dict) else ""


def _bing(http: _Http, base: str, text: str, size: int, key: str | None) -> Iterator[list[_Candidate]]:
    """Bing v7 names no licence or author per image; the page that published it is the attribution we have."""
    url = f"{base}/v7.0/images/search"
    offset = 0
    for _ in range(MAX_PAGES):
        data = http.get_json(url, params={"q": text, "count": size, "offset": offset},
                             headers={"Ocp-Apim-Subscription-Key": key or ""})
        value = data.get("value") if isinstance(data, dict) else None
        if not isinstance(value, list):
            raise _Failed("bad response: no 'value' list")
        page = []
        for item in value:
            if not isinstance(item, dict):
                continue
            fmt = _text(item.get("encodingFormat")).lower()
            page.append(_Candidate(_url(item.get("contentUrl")), "unknown",
                                   _url(item.get("hostPageUrl")),
                                   "" if fmt in _BING_FORMATS else fmt))
        yield page
        nxt = data.get("nextOffset")
        total = data.get("totalEstimatedMatches")
        nxt = nxt if isinstance(nxt, int) and nxt > offset else offset + len(value)
        if not value or (isinstance(total, int) and nxt >= total):
            return
        offset = nxt


def _openverse_license(code: str, version: str) -> str:
    code = code.lower()
    name = {"cc0": "CC0", "pdm": "Public Domain Mark"}.get(code, f"CC {code.upper()}" if code else "")
    return f"{name} {version}".strip()


def _openverse(http: _Http, base: str, text: str, size: int, key: str | None) -> Iterator[list[_Candidate]]:
    url = f"{base}/v1/images/"
    for number in range(1, MAX_PAGES + 1):
        data = http.get_json(url, params={"q": text, "page": number, "page_size": size})
        results = data.get("results") if isinstance(data, dict) else None
        if not isinstance(results, list):
            raise _Failed("bad response: no 'results' list")
        yield [_Candidate(_url(r.get("url")),
                          _openverse_license(_text(r.get("license")), _text(r.get("license_version"))),
                          _text(r.get("creator")))
               for r in results if isinstance(r, dict)]
        count = data.get("page_count")
        if not results or (isinstance(count, int) and number >= count):
            return


def _wikimedia(http: _Http, base: str, text: str, size: int, key: str | None) -> Iterator[list[_Candidate]]:
    """Commons search over File: pages; a 1,024 px thumbnail is fetched when offered (originals run to 100 MB)."""
    url = f"{base}/w/api.php"
    params: dict[str, Any] = {
        "action": "query", "generator": "search", "gsrnamespace": 6, "gsrsearch": text, "gsrlimit": size,
        "gsroffset": 0, "prop": "imageinfo", "iiprop": "url|extmetadata|mime", "iiurlwidth": 1024, "format": "json",
    }
    for _ in range(MAX_PAGES):
        data = http.get_json(url, params=params)
        if not isinstance(data, dict):
            raise _Failed("bad response: not an object")
        if isinstance(data.get("error"), dict):
            raise _Failed(f"API error: {_text(data['error'].get('code'), limit=60)}")
        pages = (data.get("query") or {}).get("pages") or {}
        pages = list(pages.values()) if isinstance(pages, dict) else pages
        items = sorted((p for p in pages if isinstance(p, dict)), key=lambda p: p.get("index", 0)
                       if isinstance(p.get("index"), int) else 0)
        page = []
        for item in items:
            infos = item.get("imageinfo")
            info = infos[0] if isinstance(infos, list) and infos and isinstance(infos[0], dict) else {}
            meta = info.get("extmetadata") if isinstance(info.get("extmetadata"), dict) else {}
            mime = _text(info.get("mime")).lower()
            page.append(_Candidate(_url(info.get("thumburl") or info.get("url")),
                                   _meta(meta, "LicenseShortName"), _meta(meta, "Artist"),
                                   "" if not mime or mime in _RASTER_MIMES else mime))
        yield page
        cont = data.get("continue")
        if not isinstance(cont, dict) or "gsroffset" not in cont:
            return
        params = {**params, **{k: v for k, v in cont.items() if isinstance(v, str | int)}}


_SEARCHES: dict[str, Callable[[_Http, str, str, int, str | None], Iterator[list[_Candidate]]]] = {
    "bing": _bing, "openverse": _openverse, "wikimedia": _wikimedia,
}
