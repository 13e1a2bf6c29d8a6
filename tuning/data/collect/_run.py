"""Collecting, orchestrated: queries per class mixed in turn, per-class targets, a resumable manifest.

The manifest (``DIR/manifest.csv``) is the record of what was collected: a second run skips every URL already
in it and counts the files already in ``raw/<class>/`` toward the target, so an interrupted run resumes.
The run ends with what it could get: a class whose results run out is reported short, not failed.
"""

from __future__ import annotations

import re
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from tuning.data.collect._fetch import Outcome, SeenHashes, fetch_one, precheck
from tuning.data.collect._http import READ_TIMEOUT, Http, RequestFailed, default_user_agent, redact
from tuning.data.collect._registry import Candidate, Provider, get_provider
from tuning.data.images import image_files
from tuning.data.manifest import EXCLUDED, read_manifest, status_kind, write_manifest
from tuning.errors import DataError

DEFAULT_MAX_BYTES = 20_000_000
#: Seconds one search or download may take in all: a hung host costs about a minute, not retries x read gaps.
DEFAULT_TIMEOUT = 60.0
#: How often the manifest is rewritten while collecting, so a killed run loses little provenance.
SAVE_EVERY = 25
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
    timeout: float = DEFAULT_TIMEOUT,
    read_timeout: float | None = None,
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
    reads the variable the provider declares (``BING_SEARCH_KEY`` for bing). Retries (``retries``,
    exponential from ``backoff`` seconds, ``Retry-After`` honoured up to ``max_wait``) cover 429, 5xx,
    timeouts and dropped connections only. ``timeout`` bounds each search and each download as a whole, every
    try, wait and slow read included, so a host that never answers or drips bytes costs at most that: a download
    is then skipped with a ``timeout:`` reason, and a search stops the run (every later one would hang as long).
    Each try gives up after ``read_timeout`` seconds without data [``timeout`` over the tries, at least 10 s].
    ``page_size`` is the results per search request [the provider's].
    """
    started = time.perf_counter()
    out = Path(out)
    parsed = [q if isinstance(q, Query) else parse_query(q) for q in queries]
    if not parsed:
        raise DataError("no --query given; pass one or more --query CLASS=SEARCH TEXT")
    spec = get_provider(provider)
    page_size = page_size or spec.page_size
    for name, value, low in (("--per-class", per_class, 1), ("--workers", workers, 1), ("--max-bytes", max_bytes, 1),
                             ("page_size", page_size, 1)):
        if value < low:
            raise DataError(f"{name} must be >= {low}, got {value}")
    if timeout <= 0:
        raise DataError(f"--timeout must be > 0 seconds, got {timeout}")
    if read_timeout is not None and read_timeout <= 0:
        raise DataError(f"read_timeout must be > 0 seconds, got {read_timeout}")
    if read_timeout is None:
        read_timeout = max(READ_TIMEOUT, timeout / (max(0, retries) + 1))
    base = _endpoint(spec, endpoint, api_key)
    secret = api_key if spec.key_env else None

    raw = out / "raw"
    rows = read_manifest(out) if (out / "manifest.csv").exists() else []
    known_urls = {r["source_url"] for r in rows if r["source_url"]}
    by_path = {r["path"]: r for r in rows}
    hashes = SeenHashes(hashes={r["sha256"] for r in rows if r["sha256"] and status_kind(r["status"]) not in EXCLUDED})
    labels = list(dict.fromkeys(q.label for q in parsed))
    result = CollectResult(out, provider, per_class, {}, {})
    http = Http(timeout=timeout, read_timeout=read_timeout, retries=retries, backoff=backoff, max_wait=max_wait,
                max_redirects=max_redirects, user_agent=user_agent or default_user_agent(), secret=secret,
                max_bytes=max_bytes)
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
                    [(q.text, spec.search(http, base, q.text, page_size, secret)) for q in parsed
                     if q.label == label], spec, result.search_errors)
                buffer: deque[Candidate] = deque()
                inflight: dict[Future[Outcome], Candidate] = {}
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
                        reason = precheck(cand, known_urls, seen, secret)
                        if reason:
                            result.skipped.append((redact(cand.url, secret), reason))
                            tell(saved)
                            continue
                        seen.add(cand.url)
                        inflight[pool.submit(fetch_one, http, out, class_dir, label, cand, hashes)] = cand
                    if not inflight:
                        break
                    done, _ = wait(inflight, return_when=FIRST_COMPLETED)
                    for fut in done:
                        inflight.pop(fut)
                        outcome = fut.result()
                        if outcome.row is None:
                            result.skipped.append((redact(outcome.url, secret), redact(outcome.reason, secret)))
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
def _endpoint(spec: Provider, endpoint: str | None, api_key: str | None) -> str:
    """The API base URL, checked with the key before any request (Bing has no public endpoint any more)."""
    if not endpoint and spec.endpoint is None:
        raise DataError(f"{spec.name} needs --endpoint URL" + (f": {spec.no_endpoint}" if spec.no_endpoint else ""))
    if spec.key_env and not api_key:
        raise DataError(f"{spec.name} needs an API key: set the {spec.key_env} environment variable")
    base = (endpoint or spec.endpoint or "").rstrip("/")
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DataError(f"--endpoint '{base}' must be an http:// or https:// URL")
    return base


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


class _RoundRobin:
    """Pages from a class's queries in turn, so the images mix every query rather than exhausting the first.

    A search that fails stops only that query (recorded); a rejected key (401/403) or a search that timed out
    stops the run, since every other request would fail the same way (or hang as long).
    """

    def __init__(self, searches: list[tuple[str, Iterator[list[Candidate]]]], spec: Provider,
                 errors: list[tuple[str, str]]) -> None:
        self._active = deque(searches)
        self._spec = spec
        self._errors = errors

    def next(self) -> list[Candidate] | None:
        while self._active:
            text, pages = self._active.popleft()
            try:
                page = next(pages)
            except StopIteration:
                continue
            except RequestFailed as exc:
                if exc.reason in ("HTTP 401", "HTTP 403"):
                    hint = f"; check {self._spec.key_env}" if self._spec.key_env else ""
                    raise DataError(f"{self._spec.name} search for '{text}' was refused ({exc.reason}){hint}") from None
                if exc.timed_out:  # the endpoint hangs: every later search would cost as long, so stop here
                    detail = exc.reason.partition(": ")[2] or "no data in time on any try"
                    raise DataError(f"{self._spec.name} search for '{text}' timed out at {exc.url or 'the endpoint'} "
                                    f"({detail}); raise --timeout (seconds per request, retries included) if the "
                                    f"service is only slow") from None
                self._errors.append((text, exc.reason))
                continue
            self._active.append((text, pages))
            return page
        return None
