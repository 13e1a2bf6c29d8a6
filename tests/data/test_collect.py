"""Collecting against a real HTTP server on 127.0.0.1 that speaks each provider's format and misbehaves on cue.

Nothing is mocked: the collector opens real sockets, the server streams real PIL-made images, and the faults
(429, 5xx, stalls, lies about content, oversized and truncated bodies, redirect loops, hostile names) are
real HTTP behaviour. No test contacts any address but 127.0.0.1.
"""

from __future__ import annotations

import io
import json
import logging
import math
import re
import struct
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from tuning.cli import cli
from tuning.data.collect import (
    Candidate,
    CollectProgress,
    _registry,
    collect,
    get_provider,
    known_providers,
    parse_query,
    register_provider,
)
from tuning.data.manifest import build_manifest, read_manifest
from tuning.errors import DataError, UnknownNameError

KEY = "sk-test-SECRET-0123456789abcdef"
KEY_HEADER = "Ocp-Apim-Subscription-Key"
#: How long the slow server keeps a request open at most (far beyond every deadline the tests set).
GIVE_UP = 12.0
FAST = {"timeout": 5.0, "read_timeout": 0.5, "retries": 2, "backoff": 0.01, "max_wait": 2.0}


def _image(seed: int, fmt: str = "JPEG", size: tuple[int, int] = (24, 20)) -> bytes:
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8), "RGB")
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def _bomb_png(width: int = 13_000, height: int = 13_000) -> bytes:
    """A PNG of a few hundred bytes whose header declares ``width`` x ``height`` (IHDR patched, CRC fixed)."""
    small = _image(1, "PNG", size=(8, 8))
    assert small[12:16] == b"IHDR"  # signature (8), then the first chunk: length (4), type (4), data (13), CRC (4)
    data = struct.pack(">II", width, height) + small[24:29]
    return small[:16] + data + struct.pack(">I", zlib.crc32(b"IHDR" + data)) + small[33:]


class FakeApi:
    """Bing v7, Openverse and Commons search over one catalogue (query -> entries), plus images and faults."""

    def __init__(self) -> None:
        self.catalog: dict[str, list[dict[str, str]]] = {}
        self.images: dict[str, tuple[bytes, str]] = {}
        self.hits: Counter[str] = Counter()
        self.times: dict[str, list[float]] = {}  # when each path was requested, to check waits between tries
        self.key_seen_on: list[str] = []  # paths whose request carried the Bing key header
        self.release = threading.Event()  # a stalled response waits on this, so teardown never waits long
        self.lock = threading.Lock()
        self.seed = 0
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # http.server's naming (N802 is not enabled)
                api.handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    # ----- catalogue
    def add(self, query: str, n: int, *, prefix: str, fmt: str = "JPEG", **meta: str) -> list[str]:
        """``n`` new, distinct images found by ``query``; returns their URLs."""
        urls = []
        for i in range(n):
            self.seed += 1
            path = f"/img/{prefix}-{i}.{'png' if fmt == 'PNG' else 'jpg'}"
            self.images[path] = (_image(self.seed, fmt), f"image/{fmt.lower()}")
            urls.append(self.entry(query, path, **meta))
        return urls

    def entry(self, query: str, path_or_url: str, **meta: str) -> str:
        url = self.base + path_or_url if path_or_url.startswith("/") else path_or_url
        self.catalog.setdefault(query, []).append({"url": url, **meta})
        return url

    def hits_under(self, prefix: str) -> int:
        with self.lock:
            return sum(n for path, n in self.hits.items() if path.startswith(prefix))

    # ----- serving
    def handle(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        path, qs = parts.path, {k: v[0] for k, v in parse_qs(parts.query).items()}
        with self.lock:
            self.hits[path] += 1
            self.times.setdefault(path, []).append(time.monotonic())
            n = self.hits[path]
            if h.headers.get(KEY_HEADER) is not None:
                self.key_seen_on.append(path)
        if path == "/v7.0/images/search":
            self._bing(h, qs)
        elif path == "/moved/v7.0/images/search":
            self._send(h, 302, b"", "text/plain", Location=self.base + "/v7.0/images/search?" + parts.query)
        elif path == "/v1/images/":
            self._openverse(h, qs)
        elif path == "/w/api.php":
            self._wikimedia(h, qs)
        elif path == "/garbage/v1/images/":
            self._send(h, 200, b"<html>maintenance</html>", "text/html")
        elif path in self.images:
            body, ctype = self.images[path]
            self._send(h, 200, body, ctype)
        elif path.endswith("evil.jpg"):  # the client may have collapsed the dot segments: serve it anyway
            self._send(h, 200, _image(len(parts.path)), "image/jpeg")
        elif path.startswith("/fault/"):
            self._fault(h, path.removeprefix("/fault/"), n)
        elif path.startswith("/slow/"):  # /slow/<mode>/anything: a search endpoint or an image, just as slow
            self._slow(h, path.split("/")[2])
        else:
            self._send(h, 404, b"not found", "text/plain")

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, code: int, body: bytes, ctype: str, **headers: str) -> None:
        try:
            h.send_response(code)
            h.send_header("Content-Type", ctype)
            h.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                h.send_header(name.replace("_", "-"), value)
            h.end_headers()
            h.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _json(self, h: BaseHTTPRequestHandler, data: Any) -> None:
        self._send(h, 200, json.dumps(data).encode(), "application/json")

    def _bing(self, h: BaseHTTPRequestHandler, qs: dict[str, str]) -> None:
        if h.headers.get(KEY_HEADER) != KEY:  # echo what was sent, like a careless gateway would
            body = json.dumps({"error": {"code": "401", "message": f"bad key {h.headers.get(KEY_HEADER)}"}})
            self._send(h, 401, body.encode(), "application/json")
            return
        entries = self.catalog.get(qs["q"], [])
        offset, count = int(qs.get("offset", 0)), int(qs.get("count", 35))
        chunk = entries[offset:offset + count]
        self._json(h, {"_type": "Images", "totalEstimatedMatches": len(entries), "nextOffset": offset + len(chunk),
                       "value": [{"contentUrl": e["url"], "hostPageUrl": e["url"] + ".html", "name": "an image",
                                  "encodingFormat": e.get("format", "jpeg")} for e in chunk]})

    def _openverse(self, h: BaseHTTPRequestHandler, qs: dict[str, str]) -> None:
        entries = self.catalog.get(qs["q"], [])
        page, size = int(qs.get("page", 1)), int(qs.get("page_size", 20))
        chunk = entries[(page - 1) * size:page * size]
        self._json(h, {"result_count": len(entries), "page_count": math.ceil(len(entries) / size), "page": page,
                       "results": [{"id": str(i), "url": e["url"], "foreign_landing_url": e["url"] + ".html",
                                    "license": "by-sa", "license_version": "4.0", "creator": "Ann Example",
                                    "title": "t"} for i, e in enumerate(chunk)]})

    def _wikimedia(self, h: BaseHTTPRequestHandler, qs: dict[str, str]) -> None:
        assert qs["action"] == "query" and qs["generator"] == "search" and qs["gsrnamespace"] == "6"
        entries = self.catalog.get(qs["gsrsearch"], [])
        offset, limit = int(qs.get("gsroffset", 0)), int(qs.get("gsrlimit", 10))
        chunk = entries[offset:offset + limit]
        pages = {}
        for i, e in enumerate(chunk):
            info: dict[str, Any] = {
                "url": e["url"].replace("/img/", "/orig/"), "descriptionurl": e["url"] + ".html",
                "mime": e.get("mime", "image/jpeg"),
                "extmetadata": {"LicenseShortName": {"value": "CC BY 4.0"},
                                "Artist": {"value": '<a href="//commons.wikimedia.org/wiki/User:Bo">Bo &amp; '
                                                    "<b>Cy</b></a>"}},
            }
            if "iiurlwidth" in qs:
                info["thumburl"] = e["url"]
            pages[str(1000 + offset + i)] = {"pageid": 1000 + offset + i, "ns": 6, "title": f"File:{i}.jpg",
                                             "index": offset + i + 1, "imageinfo": [info]}
        data: dict[str, Any] = {"batchcomplete": "", "query": {"pages": pages}}
        if offset + limit < len(entries):
            data["continue"] = {"gsroffset": offset + limit, "continue": "gsroffset||"}
        self._json(h, data)

    def _slow(self, h: BaseHTTPRequestHandler, mode: str) -> None:
        """A server that accepts the request and then never answers, or answers one byte at a time.

        Each byte comes well inside any read timeout, so only an overall deadline ends the request; the waits
        are on ``release``, so teardown ends them at once. After ``GIVE_UP`` seconds the server hangs up, so a
        client without a deadline fails its test instead of hanging it.
        """
        good = _image(77, size=(32, 32))
        stop = time.monotonic() + GIVE_UP
        try:
            if mode == "hang":
                self.release.wait(GIVE_UP)
            elif mode == "drip-head":  # the status line, then a header that never ends
                h.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nX-Drip: ")
                while time.monotonic() < stop and not self.release.wait(0.2):
                    h.wfile.write(b"a")
            elif mode == "drip-body":  # complete headers, then the promised body a byte at a time
                h.send_response(200)
                h.send_header("Content-Type", "image/jpeg")
                h.send_header("Content-Length", str(len(good)))
                h.end_headers()
                for i in range(len(good)):
                    if time.monotonic() > stop or self.release.wait(0.2):
                        break
                    h.wfile.write(good[i:i + 1])
            elif mode == "late":  # slow but finished well inside the deadline: kept
                h.send_response(200)
                h.send_header("Content-Type", "image/jpeg")
                h.send_header("Content-Length", str(len(good)))
                h.end_headers()
                step = len(good) // 4 + 1
                for i in range(0, len(good), step):
                    self.release.wait(0.2)
                    h.wfile.write(good[i:i + step])
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up, as it should

    def _fault(self, h: BaseHTTPRequestHandler, name: str, n: int) -> None:
        good = _image(9000 + sum(map(ord, name)))
        if name == "429-once.jpg" and n == 1:
            self._send(h, 429, b"slow down", "text/plain", Retry_After="1")
        elif name == "429-for-an-hour.jpg" and n == 1:
            self._send(h, 429, b"come back tomorrow", "text/plain", Retry_After="3600")
        elif name == "500-once.jpg" and n == 1:
            self._send(h, 500, b"oops", "text/plain")
        elif name == "503-always.jpg":
            self._send(h, 503, b"busy", "text/plain", Retry_After="0")
        elif name == "stall.jpg":
            self.release.wait(10)
            self._send(h, 200, good, "image/jpeg")
        elif name == "html.jpg":
            self._send(h, 200, b"<html><body>Error 500</body></html>", "text/html; charset=utf-8")
        elif name == "html-as-jpeg.jpg":
            self._send(h, 200, b"<html><body>Sorry, hotlinking is not allowed</body></html>", "image/jpeg")
        elif name == "big.jpg":
            self._send(h, 200, good + bytes(300_000), "image/jpeg")
        elif name == "big-unsized.jpg":  # no Content-Length: only streaming can notice
            try:
                h.send_response(200)
                h.send_header("Content-Type", "image/jpeg")
                h.end_headers()
                for _ in range(40):
                    h.wfile.write(bytes(16_384))
            except (BrokenPipeError, ConnectionResetError):
                pass
        elif name in ("loop-a.jpg", "loop-b.jpg"):
            other = "loop-b.jpg" if name == "loop-a.jpg" else "loop-a.jpg"
            self._send(h, 302, b"", "text/plain", Location=f"{self.base}/fault/{other}")
        elif name == "truncated.jpg":
            whole = _image(4242, size=(64, 64))
            self._send(h, 200, whole[: len(whole) * 6 // 10], "image/jpeg")
        elif name == "short-body.jpg":  # promises more bytes than it sends, then hangs up
            try:
                h.send_response(200)
                h.send_header("Content-Type", "image/jpeg")
                h.send_header("Content-Length", str(len(good)))
                h.end_headers()
                h.wfile.write(good[: len(good) // 2])
            except (BrokenPipeError, ConnectionResetError):
                pass
        elif name in ("429-once.jpg", "429-for-an-hour.jpg", "500-once.jpg"):
            self._send(h, 200, good, "image/jpeg")
        else:
            self._send(h, 404, b"not found", "text/plain")


@pytest.fixture(autouse=True)
def _local_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy from the environment must not route 127.0.0.1 elsewhere, nor a real key reach a test."""
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy", "BING_SEARCH_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def api() -> Iterator[FakeApi]:
    server = FakeApi()
    yield server
    server.close()


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _assert_contained(tmp_path: Path, out: Path) -> None:
    """Every file the collector wrote is the manifest or an image directly in raw/<class>/ named by a hash."""
    for path in _files(tmp_path):
        rel = path.relative_to(out).as_posix()  # raises if anything landed outside out/
        assert rel == "manifest.csv" or re.fullmatch(r"raw/[A-Za-z]+/[0-9a-f]{24}\.(jpg|png)", rel), rel


# ----- happy paths, one per provider format ----------------------------------------------------------------
@pytest.mark.parametrize("provider", ["bing", "openverse", "wikimedia"])
def test_each_provider_collects_n_per_class_from_several_queries(api: FakeApi, tmp_path: Path, provider: str) -> None:
    declared = {"bing": "svg", "wikimedia": "image/svg+xml"}.get(provider)
    if declared:  # a drawing the provider already says is not a raster image: never downloaded
        api.entry("war movie scenes", "/img/drawing.svg", format=declared, mime=declared)
    fighting = api.add("fighting movie scenes", 3, prefix="fight")
    war = api.add("war movie scenes", 3, prefix="war", fmt="PNG")
    api.add("romantic movie couple", 5, prefix="love")
    events: list[CollectProgress] = []
    out = tmp_path / "ds"
    result = collect(out, ["Action=fighting movie scenes", "Action=war movie scenes", "Romance=romantic movie couple"],
                     per_class=4, provider=provider, endpoint=api.base, api_key=KEY if provider == "bing" else None,
                     page_size=2, progress=events.append, **FAST)

    assert result.saved == {"Action": 4, "Romance": 4} and result.new == result.saved
    assert result.shortfall == {"Action": 0, "Romance": 0}
    assert events[-1] == CollectProgress("Romance", 4, 4, len(result.skipped))
    rows = read_manifest(out)
    assert len(rows) == 8
    action = [r for r in rows if r["label"] == "Action"]
    assert {r["source_url"] for r in action} & set(fighting) and {r["source_url"] for r in action} & set(war)
    expected = {"bing": ("unknown", None), "openverse": ("CC BY-SA 4.0", "Ann Example"),
                "wikimedia": ("CC BY 4.0", "Bo & Cy")}[provider]
    for row in rows:
        path = out / row["path"]
        assert row["path"].startswith(f"raw/{row['label']}/") and path.is_file()
        with Image.open(path) as img:
            assert img.size == (24, 20) and (row["width"], row["height"]) == ("24", "20")
        assert row["status"] == "ok" and len(row["sha256"]) == 64 and row["phash"]
        assert row["source_url"].startswith(api.base + "/img/")
        assert row["license"] == expected[0]
        assert row["creator"] == (expected[1] or row["source_url"] + ".html")
    assert api.hits_under("/orig/") == 0  # Commons: the thumbnail, not the original
    if declared:
        assert result.skipped == [(api.base + "/img/drawing.svg", f"unsupported type: {declared}")]
        assert api.hits["/img/drawing.svg"] == 0
    if provider == "bing":
        assert set(api.key_seen_on) == {"/v7.0/images/search"}  # image hosts never see the key
    _assert_contained(tmp_path, out)

    build_manifest(out)  # prepare's later pass keeps the provenance and the collector's descriptions
    again = {r["path"]: r for r in read_manifest(out)}
    assert all(again[r["path"]]["source_url"] == r["source_url"] and again[r["path"]]["group"] for r in rows)


@pytest.mark.parametrize("name", known_providers())
def test_every_registered_provider_runs_against_the_local_server(api: FakeApi, tmp_path: Path, name: str) -> None:
    """timm-style smoke test: a provider registered without a local twin of its API fails here."""
    api.add("cats", 3, prefix="cat")
    api.add("dogs", 3, prefix="dog")
    out = tmp_path / "ds"
    key = KEY if get_provider(name).key_env else None
    result = collect(out, ["Cat=cats", "Dog=dogs"], per_class=2, provider=name, endpoint=api.base, api_key=key,
                     page_size=2, **FAST)
    assert result.saved == {"Cat": 2, "Dog": 2} and result.skipped == [] and result.search_errors == []
    rows = read_manifest(out)
    assert len(rows) == 4 and all(r["status"] == "ok" and r["source_url"].startswith(api.base + "/img/") for r in rows)
    _assert_contained(tmp_path, out)


def test_an_unknown_provider_is_an_error_listing_the_known_ones(tmp_path: Path) -> None:
    known = ", ".join(sorted(known_providers()))
    assert {"bing", "openverse", "wikimedia"} <= set(known_providers())
    with pytest.raises(UnknownNameError) as info:
        collect(tmp_path / "ds", ["A=x"], provider="flickr")
    assert str(info.value) == f"unknown provider 'flickr'; known: {known}"
    code, text = _cli("--out", str(tmp_path / "ds"), "--query", "A=x", "--provider", "flickr")
    assert (code, text) == (1, f"Error: unknown provider 'flickr'; known: {known}\n")
    assert not (tmp_path / "ds").exists()


def test_a_provider_declares_its_endpoint_and_key(api: FakeApi, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """What a provider needs is declared once: the CLI reads its key variable, collect checks both first."""
    # the registration below ends with the test
    monkeypatch.setattr(_registry._PROVIDERS, "_entries", dict(_registry._PROVIDERS._entries))
    keys: list[str | None] = []
    api.add("cats", 2, prefix="cat")

    @register_provider("tiny", page_size=5, key_env="TINY_KEY", no_endpoint="tiny has no public API")
    def tiny(http: Any, base: str, text: str, size: int, key: str | None) -> Iterator[list[Candidate]]:
        keys.append(key)
        data = http.get_json(f"{base}/v1/images/", params={"q": text, "page": 1, "page_size": size})
        yield [Candidate(r["url"], "CC0", "") for r in data["results"]]

    assert "tiny" in known_providers() and get_provider("tiny").key_env == "TINY_KEY"
    out = str(tmp_path / "ds")
    code, text = _cli("--out", out, "--query", "Cat=cats", "--provider", "tiny")
    assert (code, text) == (1, "Error: tiny needs --endpoint URL: tiny has no public API\n")
    code, text = _cli("--out", out, "--query", "Cat=cats", "--provider", "tiny", "--endpoint", api.base)
    assert (code, text) == (1, "Error: tiny needs an API key: set the TINY_KEY environment variable\n")
    code, text = _cli("--out", out, "--query", "Cat=cats", "--provider", "tiny", "--endpoint", api.base,
                      "--per-class", "2", env={"TINY_KEY": "k-123"})
    assert code == 0, text
    assert keys == ["k-123"] and len(read_manifest(Path(out))) == 2


def test_results_running_out_is_a_shortfall_not_a_failure(api: FakeApi, tmp_path: Path) -> None:
    api.add("rare thing", 2, prefix="rare")
    api.add("common thing", 3, prefix="common")
    result = collect(tmp_path / "ds", ["Rare=rare thing", "Common=common thing"], per_class=3, provider="openverse",
                     endpoint=api.base, page_size=1, **FAST)
    assert result.saved == {"Rare": 2, "Common": 3}
    assert result.shortfall == {"Rare": 1, "Common": 0}


# ----- faults ----------------------------------------------------------------------------------------------
def test_every_fault_is_skipped_with_its_reason_or_retried(api: FakeApi, tmp_path: Path) -> None:
    api.add("stunts", 3, prefix="good")
    faults = ["429-once.jpg", "500-once.jpg", "503-always.jpg", "stall.jpg", "html.jpg", "html-as-jpeg.jpg", "big.jpg",
              "big-unsized.jpg", "loop-a.jpg", "truncated.jpg", "short-body.jpg", "missing.jpg", "..%2F..%2Fevil.jpg",
              "x/../../../evil.jpg"]
    for name in faults:
        api.entry("stunts", "/fault/" + name)
    api.entry("explosions", "/img/good-0.jpg")  # the same URL from a second query
    api.images["/img/copy.jpg"] = api.images["/img/good-1.jpg"]
    api.entry("explosions", "/img/copy.jpg")  # another URL, byte-identical content
    api.entry("explosions", "file:///etc/passwd")
    out = tmp_path / "ds"
    result = collect(out, ["Action=stunts", "Action=explosions"], per_class=50, provider="openverse",
                     endpoint=api.base, max_bytes=100_000, page_size=50, **FAST)

    skipped = {url.removeprefix(api.base): reason for url, reason in result.skipped}
    assert skipped == {
        "/fault/503-always.jpg": "HTTP 503",
        "/fault/stall.jpg": "timeout",
        "/fault/html.jpg": "wrong content type: text/html",
        "/fault/html-as-jpeg.jpg": "not an image",
        "/fault/big.jpg": "too large",
        "/fault/big-unsized.jpg": "too large",
        "/fault/loop-a.jpg": "redirect loop",
        "/fault/truncated.jpg": "truncated image",
        "/fault/short-body.jpg": "truncated download",
        "/fault/missing.jpg": "HTTP 404",
        "/img/good-0.jpg": "duplicate URL",
        "/img/copy.jpg": "duplicate content",
        "file:///etc/passwd": "bad URL",
    }
    # 3 good + 429 and 500 retried + the two hostile names saved under a hashed name: 7, short of 50
    assert result.saved == {"Action": 7} and result.shortfall == {"Action": 43}
    sources = {r["source_url"].removeprefix(api.base) for r in read_manifest(out)}
    assert {"/fault/429-once.jpg", "/fault/500-once.jpg", "/fault/..%2F..%2Fevil.jpg"} <= sources
    assert api.hits["/fault/429-once.jpg"] == 2 and api.hits["/fault/500-once.jpg"] == 2
    first, second = api.times["/fault/429-once.jpg"]
    assert second - first >= 0.9  # Retry-After: 1 was honoured
    retried = 1 + FAST["retries"]  # bounded: the first try and two more
    assert api.hits["/fault/503-always.jpg"] == retried and api.hits["/fault/stall.jpg"] == retried
    assert api.hits["/fault/short-body.jpg"] == retried
    assert api.hits["/fault/html.jpg"] == 1 and api.hits["/fault/big.jpg"] == 1 and api.hits["/img/good-0.jpg"] == 1
    assert result.reasons()["too large"] == 2
    assert not list(tmp_path.rglob("*evil*"))
    _assert_contained(tmp_path, out)


def test_a_decompression_bomb_is_refused_before_decoding_and_not_counted(api: FakeApi, tmp_path: Path) -> None:
    bomb = _bomb_png()
    assert len(bomb) < 1000
    with pytest.warns(Image.DecompressionBombWarning), Image.open(io.BytesIO(bomb)) as img:
        assert img.size == (13_000, 13_000)  # 169 MP: plain Pillow only warns, and would decode it all
    api.images["/img/bomb.png"] = (bomb, "image/png")
    bomb_url = api.entry("posters", "/img/bomb.png")
    good = api.add("posters", 3, prefix="poster")
    out = tmp_path / "ds"
    result = collect(out, ["Poster=posters"], per_class=3, provider="openverse", endpoint=api.base, workers=1, **FAST)
    reason = "decompression bomb: over 150,000,000 pixels"
    assert result.skipped == [(bomb_url, reason)] and result.reasons() == {"decompression bomb": 1}
    assert result.saved == {"Poster": 3} and result.shortfall == {"Poster": 0}  # the bomb did not count
    assert {r["source_url"] for r in read_manifest(out)} == set(good)
    assert len(_files(out / "raw")) == 3
    code, text = _cli("--out", str(tmp_path / "cli"), "--query", "Poster=posters", "--per-class", "3",
                      "--endpoint", api.base, "--timeout", "0.5")
    assert code == 0, text
    assert re.search(r"Poster\s+3/3\n", text) and re.search(r"Skipped 1 image\(s\)\n\s+decompression bomb\s+1\n", text)


def test_a_long_retry_after_is_capped(api: FakeApi, tmp_path: Path) -> None:
    api.entry("q", "/fault/429-for-an-hour.jpg")
    result = collect(tmp_path / "ds", ["A=q"], per_class=1, provider="openverse", endpoint=api.base,
                     **{**FAST, "max_wait": 0.2})
    assert result.saved == {"A": 1}
    first, second = api.times["/fault/429-for-an-hour.jpg"]
    assert 0.15 <= second - first < 2


def test_search_failures_stop_that_query_and_refusals_stop_the_run(api: FakeApi, tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        collect(tmp_path / "a", ["Action=x"], per_class=2, provider="openverse", endpoint=api.base + "/garbage",
                **FAST)
    assert str(info.value) == "openverse: every search failed; first: 'x': bad response: not JSON"
    with pytest.raises(DataError, match=r"^bing search for 'x' was refused \(HTTP 401\); check BING_SEARCH_KEY$"):
        collect(tmp_path / "b", ["Action=x"], per_class=2, provider="bing", endpoint=api.base, api_key="wrong",
                **FAST)


# ----- one deadline per request -----------------------------------------------------------------------
DEADLINE = 0.6
#: What may come on top of the deadline: threads starting, the other images, the summary. Far below a retry.
SLACK = 1.0
HUNG = ["hang", "drip-head", "drip-body"]


@pytest.mark.parametrize("mode", HUNG)
def test_a_download_that_never_finishes_is_skipped_at_the_deadline(api: FakeApi, tmp_path: Path, mode: str) -> None:
    """Bytes arriving inside every read timeout (10 s here) still end at the request's deadline, as a skip."""
    slow = api.entry("q", f"/slow/{mode}/x.jpg")
    good = api.add("q", 2, prefix="ok")
    started = time.monotonic()
    result = collect(tmp_path / "ds", ["A=q"], per_class=2, provider="openverse", endpoint=api.base, workers=1,
                     **{**FAST, "timeout": DEADLINE, "read_timeout": 10.0, "retries": 3})
    elapsed = time.monotonic() - started
    assert DEADLINE <= elapsed < DEADLINE + SLACK
    assert result.skipped == [(slow, f"timeout: no complete answer within {DEADLINE:g}s")]
    assert result.reasons() == {"timeout": 1}
    assert result.saved == {"A": 2} and {r["source_url"] for r in read_manifest(tmp_path / "ds")} == set(good)
    assert api.hits[f"/slow/{mode}/x.jpg"] == 1  # the deadline covers the retries too: none was left


def test_a_slow_download_that_finishes_in_time_is_kept(api: FakeApi, tmp_path: Path) -> None:
    late = api.entry("q", "/slow/late/x.jpg")  # four pieces 0.2 s apart: every gap inside the read timeout
    result = collect(tmp_path / "ds", ["A=q"], per_class=1, provider="openverse", endpoint=api.base,
                     **{**FAST, "timeout": 4.0, "read_timeout": 0.5})
    assert result.saved == {"A": 1} and result.skipped == []
    assert [r["source_url"] for r in read_manifest(tmp_path / "ds")] == [late]


@pytest.mark.parametrize("mode", HUNG)
def test_a_hung_search_stops_the_run_at_the_deadline_naming_the_url_and_the_option(
        api: FakeApi, tmp_path: Path, mode: str) -> None:
    endpoint = f"{api.base}/slow/{mode}"
    expected = (f"openverse search for 'x' timed out at {endpoint}/v1/images/ (no complete answer within "
                f"{DEADLINE:g}s); raise --timeout (seconds per request, retries included) if the service is only slow")
    started = time.monotonic()
    with pytest.raises(DataError) as info:
        collect(tmp_path / "ds", ["Action=x", "Romance=y"], per_class=2, provider="openverse", endpoint=endpoint,
                **{**FAST, "timeout": DEADLINE, "read_timeout": 10.0, "retries": 3})
    elapsed = time.monotonic() - started
    assert str(info.value) == expected
    assert DEADLINE <= elapsed < DEADLINE + SLACK
    assert api.hits_under("/slow/") == 1  # the second class's search was not tried: it would hang as long


def test_cli_timeout_bounds_a_hung_search(api: FakeApi, tmp_path: Path) -> None:
    """--timeout is the whole budget of one request: 1 s means about 1 s, whatever the retries."""
    endpoint = f"{api.base}/slow/drip-head"
    started = time.monotonic()
    code, text = _cli("--out", str(tmp_path / "ds"), "--query", "Action=x", "--endpoint", endpoint, "--timeout", "1")
    elapsed = time.monotonic() - started
    assert (code, text) == (1, f"Error: openverse search for 'x' timed out at {endpoint}/v1/images/ (no complete "
                               f"answer within 1s); raise --timeout (seconds per request, retries included) if the "
                               f"service is only slow\n")
    assert 1 <= elapsed < 1 + SLACK


def test_cli_timeout_defaults_to_a_minute() -> None:
    from tuning.data.collect import DEFAULT_TIMEOUT

    collect_command = cli.commands["data"].commands["collect"]  # type: ignore[attr-defined]  # a click.Group
    option = next(p for p in collect_command.params if p.name == "timeout")
    assert option.default == DEFAULT_TIMEOUT == 60.0


# ----- resume ----------------------------------------------------------------------------------------------
def test_rerun_resumes_without_downloading_again(api: FakeApi, tmp_path: Path) -> None:
    api.add("fights", 5, prefix="a")
    api.add("kisses", 5, prefix="r")
    out = tmp_path / "ds"
    queries = ["Action=fights", "Romance=kisses"]

    def run(n: int) -> Any:
        return collect(out, queries, per_class=n, provider="openverse", endpoint=api.base, page_size=2, **FAST)

    first = run(2)
    assert first.new == {"Action": 2, "Romance": 2} and api.hits_under("/img/") == 4
    before = dict(api.hits)
    second = run(2)  # the files on disk already meet the target: no search, no download
    assert second.new == {"Action": 0, "Romance": 0} and second.saved == {"Action": 2, "Romance": 2}
    assert dict(api.hits) == before

    rows = read_manifest(out)  # simulate a run killed after writing a file but before saving its row
    orphan = next(r for r in rows if r["label"] == "Action")
    from tuning.data.manifest import write_manifest

    write_manifest(out, [r for r in rows if r is not orphan])
    third = run(4)
    assert third.new == {"Action": 2, "Romance": 2} and third.saved == {"Action": 4, "Romance": 4}
    assert all(n == 1 for path, n in api.hits.items() if path.startswith("/img/"))  # nothing fetched twice
    assert api.hits_under("/img/") == 8
    assert Counter(reason for _, reason in third.skipped) == {"already collected": 3}
    final = read_manifest(out)
    assert len(final) == 8 and len({r["source_url"] for r in final}) == 8
    assert next(r for r in final if r["path"] == orphan["path"])["source_url"] == orphan["source_url"]


# ----- the key -------------------------------------------------------------------------------------------
def test_the_api_key_never_leaks(api: FakeApi, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    api.add("fights", 2, prefix="k")
    for name in ("missing.jpg", "html.jpg", "stall.jpg", "loop-a.jpg", "short-body.jpg"):
        api.entry("fights", "/fault/" + name)
    api.entry("fights", f"{api.base}/fault/{KEY}.jpg")  # an endpoint echoing the key: not fetched, redacted
    out = tmp_path / "ds"
    result = collect(out, ["Action=fights"], per_class=10, provider="bing", endpoint=api.base, api_key=KEY, **FAST)
    assert result.saved == {"Action": 2} and len(result.skipped) == 6
    api.add("calm", 1, prefix="calm")
    api.entry("calm", "/fault/missing.jpg")
    errors = []
    searches = api.hits["/v7.0/images/search"]
    for endpoint, key in ((api.base, KEY[::-1]), (api.base + "/moved", KEY)):
        with pytest.raises(DataError) as info:
            collect(tmp_path / "other", ["Action=fights"], per_class=1, provider="bing", endpoint=endpoint, api_key=key,
                    **FAST)
        errors.append(f"{info.value!s} {info.value!r} {info.value.__cause__!r} {info.value.__context__!r}")
    assert "redirected" in errors[1]
    assert api.hits["/v7.0/images/search"] == searches + 1  # the wrong key's one try; the redirect not followed
    runner = CliRunner()
    cli_out = runner.invoke(cli, ["data", "collect", "--out", str(tmp_path / "cli"), "--query", "Action=calm",
                                  "--provider", "bing", "--endpoint", api.base, "--timeout", "0.5", "--per-class",
                                  "10"], env={"BING_SEARCH_KEY": KEY}).output

    texts = [repr(result.skipped), *errors, caplog.text, cli_out]
    texts += [p.read_bytes().decode("latin-1") for p in _files(tmp_path)]
    for text in texts:
        assert KEY not in text and KEY[::-1] not in text
    assert (f"{api.base}/fault/***.jpg", "bad URL") in result.skipped and api.hits[f"/fault/{KEY}.jpg"] == 0
    assert set(api.key_seen_on) == {"/v7.0/images/search", "/moved/v7.0/images/search"}


# ----- user errors ---------------------------------------------------------------------------------------
def _cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["data", "collect", *args], env=env)
    return result.exit_code, result.output


def test_missing_key_or_endpoint_is_a_one_line_error(tmp_path: Path) -> None:
    out = str(tmp_path / "ds")
    code, text = _cli("--out", out, "--query", "A=x", "--provider", "bing", "--endpoint", "http://127.0.0.1:9")
    assert code == 1 and text == "Error: bing needs an API key: set the BING_SEARCH_KEY environment variable\n"
    code, text = _cli("--out", out, "--query", "A=x", "--provider", "bing", env={"BING_SEARCH_KEY": KEY})
    assert code == 1 and text.startswith("Error: bing needs --endpoint URL: ") and text.count("\n") == 1
    assert KEY not in text
    with pytest.raises(DataError, match="BING_SEARCH_KEY"):
        collect(tmp_path / "ds", ["A=x"], provider="bing", endpoint="http://127.0.0.1:9")
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize("spec", ["fighting movie scenes", "=fighting", "Action=", "../../etc=x", ".hidden=x", "a/b=x"])
def test_a_query_without_a_usable_class_is_a_one_line_error(tmp_path: Path, spec: str) -> None:
    code, text = _cli("--out", str(tmp_path / "ds"), "--query", "Action=ok", "--query", spec)
    assert code == 1 and text.startswith(f"Error: --query '{spec}': ") and text.count("\n") == 1
    with pytest.raises(DataError):
        parse_query(spec)
    assert not (tmp_path / "ds").exists()


def test_parse_query_keeps_equals_signs_in_the_search_text() -> None:
    query = parse_query(" Sci-Fi = a=b spaceships ")
    assert (query.label, query.text) == ("Sci-Fi", "a=b spaceships")


# ----- the command -----------------------------------------------------------------------------------------
def test_cli_collect_prints_a_summary(api: FakeApi, tmp_path: Path) -> None:
    api.add("fighting movie scenes", 2, prefix="f")
    api.entry("war movie scenes", "/fault/html.jpg")
    api.add("war movie scenes", 2, prefix="w")
    api.add("romantic movie couple", 2, prefix="r")
    out = tmp_path / "ds"
    code, text = _cli("--out", str(out), "--query", "Action=fighting movie scenes", "--query",
                      "Action=war movie scenes", "--query", "Romance=romantic movie couple", "--per-class", "3",
                      "--provider", "wikimedia", "--endpoint", api.base, "--timeout", "0.5", "--workers", "2")
    assert code == 0, text
    assert "Collected 5 new images from wikimedia" in text
    assert re.search(r"Action\s+3/3\n", text)
    assert re.search(r"Romance\s+2/3 {2}\(1 short: the results ran out\)", text)
    assert re.search(r"Skipped 1 image\(s\)\n\s+wrong content type\s+1\n", text)
    assert f"Manifest: {out / 'manifest.csv'}" in text
    assert len(read_manifest(out)) == 5
    # each class's progress ends with its count, rate and skips (not a terminal: no redrawn lines)
    assert re.search(r"^  collect Action 3/3 images \d+/s, 1 skipped$", text, re.M), text
    assert re.search(r"^  collect Romance 2/3 images \d+/s, 0 skipped$", text, re.M), text
    assert "\r" not in text
