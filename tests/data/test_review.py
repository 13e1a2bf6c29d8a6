"""The review pages and ``--apply``: plain checks of the HTML and the manifest, and one real headless-browser run.

The browser is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: NUL-separated JSON on
file descriptors 3 and 4), so the test needs nothing but a Chromium or Chrome binary: no driver, no websocket
library, no port. Where none is found or it cannot start, that test is skipped with the reason.
"""

from __future__ import annotations

import html
import json
import os
import re
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from tuning.cli import cli
from tuning.data.manifest import read_manifest
from tuning.data.review import apply_rejects, match_names, read_rejects, write_review
from tuning.errors import DataError


def _noise(size: tuple[int, int], seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """Two classes; one byte-identical pair (a group), one corrupt file, and one file name used in both classes."""
    root = tmp_path / "set"
    action, romance = root / "raw" / "Action", root / "raw" / "Romance" / "nested"
    action.mkdir(parents=True)
    romance.mkdir(parents=True)
    for i in range(4):
        _noise((60, 40), i).save(action / f"a{i}.jpg")
        _noise((40, 60), 10 + i).save(romance / f"r{i}.png")
    _noise((50, 50), 20).save(action / "same.jpg")
    _noise((50, 50), 21).save(romance / "same.jpg")
    shutil.copyfile(action / "a0.jpg", action / "a0 copy.jpg")
    (action / "broken.jpg").write_text("not a jpeg <b>at all</b>")
    return root


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def _statuses(root: Path) -> dict[str, str]:
    return {r["path"]: r["status"] for r in read_manifest(root)}


# ----- pages ---------------------------------------------------------------------------------------------
def test_review_builds_the_manifest_and_writes_one_page_per_class(dataset: Path) -> None:
    code, out = _cli("data", "review", str(dataset))
    assert code == 0, out
    assert (dataset / "manifest.csv").exists()
    review = dataset / "review"
    assert sorted(p.name for p in review.iterdir()) == ["Action.html", "Romance.html", "index.html"]
    assert "Built manifest.csv" in out and "Action" in out and "--apply rejects.txt" in out
    assert re.search(r"^  thumbnails (\d+)/\1 images \d+/s$", out, re.M) and "\r" not in out  # the final count
    index = (review / "index.html").read_text(encoding="utf-8")
    assert 'href="Action.html"' in index and 'href="Romance.html"' in index


def test_page_has_one_tick_box_per_image_and_the_duplicate_group(dataset: Path) -> None:
    report = write_review(dataset)
    action = {s.label: s for s in report.sheets}["Action"]
    page = action.page.read_text(encoding="utf-8")
    readable = [r for r in read_manifest(dataset) if r["label"] == "Action" and not r["status"].startswith("unread")]
    boxes = re.findall(r'<input type="checkbox" class="reject" data-path="([^"]+)"', page)
    assert len(boxes) == len(set(boxes)) == action.images == 6
    assert set(boxes) == {r["path"] for r in readable}
    assert page.count("<img ") == 6 and page.count('loading="lazy"') == 6
    assert page.count("data:image/jpeg;base64,") == 6
    duplicates = page.split('id="duplicates"')[1].split("</section>")[0]
    assert duplicates.count('class="group"') == 1 == action.duplicate_groups
    assert 'data-path="raw/Action/a0.jpg"' in duplicates and 'data-path="raw/Action/a0 copy.jpg"' in duplicates
    assert "duplicate-of:raw/Action/a0.jpg" in duplicates
    assert "Save rejects" in page and "rejects.txt" in page
    romance = {s.label: s for s in report.sheets}["Romance"].page.read_text(encoding="utf-8")
    assert 'id="duplicates"' not in romance and romance.count('class="reject"') == 5


def test_unreadable_files_are_listed_with_their_reason_and_no_tick_box(dataset: Path) -> None:
    report = write_review(dataset, out=dataset / "sheets" / "start.html")
    assert report.index == dataset / "sheets" / "start.html" and report.index.exists()
    page = (dataset / "sheets" / "Action.html").read_text(encoding="utf-8")
    status = _statuses(dataset)["raw/Action/broken.jpg"]
    reason = status.removeprefix("unreadable:")
    assert status.startswith("unreadable:") and reason
    table = page.split('id="unreadable"')[1]
    assert "raw/Action/broken.jpg" in table and html.escape(reason) in table
    assert 'data-path="raw/Action/broken.jpg"' not in page
    assert "<b>at all</b>" not in page  # file contents never leak unescaped


def test_rejected_rows_keep_a_fixed_ticked_box_and_are_not_saved_again(dataset: Path) -> None:
    write_review(dataset)
    apply_rejects(dataset, _write(dataset / "r.txt", "a1.jpg\n"))
    report = write_review(dataset)
    page = report.sheets[0].page.read_text(encoding="utf-8")
    assert 'data-path="raw/Action/a1.jpg" checked disabled' in page
    assert report.sheets[0].rejected == 1
    assert ":not(:disabled)" in page  # the save button skips them


def test_review_of_a_missing_dataset_is_a_one_line_error(tmp_path: Path) -> None:
    code, out = _cli("data", "review", str(tmp_path / "nowhere"))
    assert code == 1 and out.startswith("Error: ") and out.count("\n") == 1


def test_out_and_apply_together_is_a_usage_error(dataset: Path) -> None:
    code, out = _cli("data", "review", str(dataset), "--out", "x", "--apply", "y")
    assert code == 2 and "--out and --apply cannot be used together" in out


# ----- apply ---------------------------------------------------------------------------------------------
def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_apply_accepts_paths_and_plain_names_and_ignores_comments(dataset: Path) -> None:
    write_review(dataset)
    before = _statuses(dataset)
    rejects = _write(dataset / "rejects.txt", "# ticked by hand\n\nraw/Action/a1.jpg\n  r2.png  \n# a2.jpg\n")
    code, out = _cli("data", "review", str(dataset), "--apply", str(rejects))
    assert code == 0, out
    assert out.startswith("Marked 2 image(s) rejected in ")
    after = _statuses(dataset)
    assert after["raw/Action/a1.jpg"] == after["raw/Romance/nested/r2.png"] == "rejected"
    assert {k: v for k, v in after.items() if v != "rejected"} == {
        k: v for k, v in before.items() if k not in ("raw/Action/a1.jpg", "raw/Romance/nested/r2.png")}


def test_apply_reports_ambiguous_and_unknown_names_without_guessing(dataset: Path) -> None:
    write_review(dataset)
    before = _statuses(dataset)
    rejects = _write(dataset / "rejects.txt", "same.jpg\nnope.jpg\nraw/Action/gone.jpg\nRomance/nested/same.jpg\n")
    code, out = _cli("data", "review", str(dataset), "--apply", str(rejects))
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].startswith("Marked 1 image(s) rejected")
    assert "  not found: nope.jpg" in lines and "  not found: raw/Action/gone.jpg" in lines
    assert "  ambiguous, not marked: same.jpg (matches raw/Action/same.jpg, raw/Romance/nested/same.jpg)" in lines
    after = _statuses(dataset)
    assert after["raw/Romance/nested/same.jpg"] == "rejected"
    assert after["raw/Action/same.jpg"] == before["raw/Action/same.jpg"] == "ok"


def test_apply_twice_changes_nothing_the_second_time(dataset: Path) -> None:
    rejects = _write(dataset / "rejects.txt", "a1.jpg\na1.jpg\nbroken.jpg\n")  # no manifest yet: built first
    first = apply_rejects(dataset, rejects)
    assert first.marked == ["raw/Action/a1.jpg"] and first.unchanged == ["raw/Action/broken.jpg"]
    manifest = (dataset / "manifest.csv").read_bytes()
    mtime = (dataset / "manifest.csv").stat().st_mtime_ns
    code, out = _cli("data", "review", str(dataset), "--apply", str(rejects))
    assert code == 0 and out.startswith("Marked 0 image(s) rejected") and "(2 already excluded)" in out
    assert (dataset / "manifest.csv").read_bytes() == manifest
    assert (dataset / "manifest.csv").stat().st_mtime_ns == mtime  # not even rewritten
    assert _statuses(dataset)["raw/Action/broken.jpg"].startswith("unreadable:")  # its reason is kept


def test_missing_rejects_file_is_a_one_line_error(dataset: Path) -> None:
    code, out = _cli("data", "review", str(dataset), "--apply", str(dataset / "none.txt"))
    assert code == 1 and out == f"Error: {dataset / 'none.txt'}: no such rejects file\n"
    with pytest.raises(DataError, match="is a folder"):
        read_rejects(dataset)


def test_match_names_by_exact_path_suffix_and_absolute_path() -> None:
    paths = ["raw/A/x.jpg", "raw/B/x.jpg", "raw/B/deep/y.jpg"]
    found, unknown, ambiguous = match_names(paths, ["raw/A/x.jpg", "B/x.jpg", "y.jpg", "/data/set/raw/B/deep/y.jpg",
                                                    "x.jpg", "ep/y.jpg", ".\\raw\\A\\x.jpg"])
    assert found == {"raw/A/x.jpg": "raw/A/x.jpg", "B/x.jpg": "raw/B/x.jpg", "y.jpg": "raw/B/deep/y.jpg",
                     "/data/set/raw/B/deep/y.jpg": "raw/B/deep/y.jpg", ".\\raw\\A\\x.jpg": "raw/A/x.jpg"}
    assert unknown == ["ep/y.jpg"]  # a suffix must end at a folder boundary
    assert ambiguous == {"x.jpg": ["raw/A/x.jpg", "raw/B/x.jpg"]}


# ----- a real browser ------------------------------------------------------------------------------------
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


class _Chrome:
    """Headless Chromium driven over ``--remote-debugging-pipe``: commands out on fd 3, replies and events on fd 4."""

    def __init__(self, binary: str, profile: Path) -> None:
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        # Copies above 9 (close-on-exec), so placing them on 3 and 4 in the child never overwrites one with the other;
        # close_fds=False because it would close 3 and 4 after the placing. Python's own fds are close-on-exec anyway.
        high_r, high_w = (self._high(fd) for fd in (to_chrome_r, from_chrome_w))
        self.log = profile.parent / "chrome.log"

        def place_pipes() -> None:
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        args = [binary, "--headless", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
                "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                "--disable-background-networking", "--disable-sync", f"--user-data-dir={profile}", "about:blank"]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         preexec_fn=place_pipes, close_fds=False)
        for fd in (to_chrome_r, from_chrome_w, high_r, high_w):
            os.close(fd)
        self._next_id = 0
        self._buffer = b""
        self.events: list[dict[str, Any]] = []

    @staticmethod
    def _high(fd: int) -> int:
        import fcntl

        return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no answer from the browser")
            if select.select([self._from_chrome], [], [], left)[0]:
                chunk = os.read(self._from_chrome, 1 << 20)
                if not chunk:
                    raise ConnectionError(f"the browser closed the pipe (exit code {self.proc.poll()})")
                self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, params: dict[str, Any] | None = None, *, session: str | None = None,
             timeout: float = 15.0) -> dict[str, Any]:
        self._next_id += 1
        command: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            command["sessionId"] = session
        os.write(self._to_chrome, json.dumps(command).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            message = self._read(deadline)
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_event(self, method: str, *, timeout: float = 15.0, **match: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events:
                if event.get("method") == method and all(event["params"].get(k) == v for k, v in match.items()):
                    self.events.remove(event)
                    return event["params"]
            self.events.append(self._read(deadline))

    def evaluate(self, expression: str, *, session: str) -> Any:
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=session)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_until(self, condition: str, *, session: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.evaluate(condition, session=session):
            if time.monotonic() > deadline:
                raise TimeoutError(f"still false after {timeout:g}s: {condition}")
            time.sleep(0.05)

    def click(self, selector: str, *, session: str) -> None:
        """A real mouse click (press and release at the element's centre), as a person would make it."""
        x, y = self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            " e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
            " return [r.x + r.width / 2, r.y + r.height / 2]; })()",
            session=session)
        self.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y}, session=session)
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1},
                      session=session)

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except Exception:  # noqa: BLE001 - closing is best effort; the process is ended below either way
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_chrome)
        os.close(self._from_chrome)


@pytest.fixture
def chrome(tmp_path: Path) -> Any:
    binary = os.environ.get("CHROME_BIN") or next(filter(None, map(shutil.which, BROWSERS)), None)
    if not binary:
        pytest.skip(f"no browser for the review page test: none of {', '.join(BROWSERS)} on PATH (or set CHROME_BIN)")
    (tmp_path / "profile").mkdir()
    try:
        browser = _Chrome(binary, tmp_path / "profile")
    except OSError as exc:
        pytest.skip(f"could not start {binary}: {exc}")
    try:
        browser.send("Browser.getVersion", timeout=30)
    except (TimeoutError, ConnectionError) as exc:
        browser.close()
        tail = browser.log.read_text(errors="replace")[-300:].strip()
        pytest.skip(f"{binary} did not start headless: {exc}; {tail}")
    yield browser
    browser.close()


def test_browser_ticks_two_images_saves_rejects_and_apply_marks_them(dataset: Path, chrome: _Chrome,
                                                                     tmp_path: Path) -> None:
    page = {s.label: s for s in write_review(dataset).sheets}["Action"].page
    before = read_manifest(dataset)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    chrome.send("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads),
                                                "eventsEnabled": True})
    target = chrome.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = chrome.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    chrome.send("Page.navigate", {"url": page.as_uri()}, session=session)
    chrome.wait_until(f"location.href === {json.dumps(page.as_uri())} && document.readyState === 'complete'",
                      session=session)
    assert chrome.evaluate("document.querySelectorAll('input.reject').length", session=session) == 6
    picked = ["raw/Action/a0 copy.jpg", "raw/Action/a2.jpg"]  # one from the duplicate group, one plain image
    for path in picked:
        chrome.click(f'input.reject[data-path="{path}"]', session=session)
    assert chrome.evaluate("document.getElementById('count').textContent", session=session) == "2 ticked"
    chrome.click("#save", session=session)
    begun = chrome.wait_event("Browser.downloadWillBegin")
    assert begun["suggestedFilename"] == "rejects.txt"
    chrome.wait_event("Browser.downloadProgress", guid=begun["guid"], state="completed")
    saved = downloads / "rejects.txt"
    for _ in range(50):  # the file is renamed from its temporary name just after "completed"
        if saved.exists():
            break
        time.sleep(0.1)
    assert sorted(read_rejects(saved)) == sorted(picked)

    code, out = _cli("data", "review", str(dataset), "--apply", str(saved))
    assert code == 0, out
    assert out.startswith("Marked 2 image(s) rejected")
    after = read_manifest(dataset)
    assert [r["path"] for r in after] == [r["path"] for r in before]
    for old, new in zip(before, after):
        if old["path"] in picked:
            assert new == {**old, "status": "rejected"}
        else:
            assert new == old


def _header_only_png(width: int, height: int) -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def test_a_13k_png_thumbnail_is_refused_as_a_decompression_bomb(dataset: Path) -> None:
    from tuning.data.review import _safe_thumbnail

    bomb = dataset / "raw" / "Action" / "bomb.png"
    bomb.write_bytes(_header_only_png(13_000, 13_000))  # Pillow alone would only warn, then decode it all
    assert "decompression bomb" in _safe_thumbnail(bomb, 128)
    write_review(dataset)
    page = (dataset / "review" / "Action.html").read_text(encoding="utf-8")
    assert "bomb.png" in page and "decompression bomb" in page


def test_review_rescans_files_added_since_the_manifest(dataset: Path) -> None:
    write_review(dataset)
    _noise((30, 30), 99).save(dataset / "raw" / "Action" / "later.jpg")
    write_review(dataset)
    assert "later.jpg" in (dataset / "review" / "Action.html").read_text(encoding="utf-8")
