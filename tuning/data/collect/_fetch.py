"""One image from URL to ``raw/<class>/``: checked before download, decoded completely, saved atomically.

An image URL never chooses its file name (names are a hash of the URL plus the extension of the format PIL
actually decoded), and a file is kept only if PIL decodes it completely. A bad image is an outcome with a
short reason, never an exception.
"""

from __future__ import annotations

import hashlib
import io
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from PIL import Image, UnidentifiedImageError

from tuning import _io
from tuning.data.collect._http import Http, RequestFailed
from tuning.data.collect._registry import Candidate
from tuning.data.images import MAX_PIXELS, ImageTooLarge, open_image
from tuning.data.manifest import MANIFEST_COLUMNS, describe_file

#: The skip reason for an image whose header declares more pixels than import and prepare would ever decode.
BOMB = f"decompression bomb: over {MAX_PIXELS:,} pixels"
EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif"}
_OPEN_LOCK = threading.Lock()


@dataclass(frozen=True)
class Outcome:
    url: str
    row: dict[str, str] | None = None
    reason: str = ""
    adopted: bool = False  # the file was already on disk (an interrupted run); it is counted already


@dataclass
class SeenHashes:
    """Content hashes shared by the download threads, so byte-identical images are kept once."""

    hashes: set[str]
    lock: threading.Lock = field(default_factory=threading.Lock)

    def claim(self, sha256: str) -> bool:
        with self.lock:
            if sha256 in self.hashes:
                return False
            self.hashes.add(sha256)
            return True


def precheck(cand: Candidate, known: set[str], seen: set[str], secret: str | None) -> str:
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


def decode(data: bytes) -> str:
    """The file extension of a completely decodable raster image, or raise with the reason.

    The same guarded ``open_image`` as import reads the header first, so an image declaring more than
    ``MAX_PIXELS`` (a few KB that would decode to gigabytes; Pillow only warns up to twice its limit) is
    refused before a single pixel is decoded.
    """
    if not data:
        raise RequestFailed("empty body")
    try:
        with _OPEN_LOCK:  # open_image swaps the process's warning filters, which threads must not do at once
            img = open_image(io.BytesIO(data))
        with img:
            fmt = img.format or ""
            img.load()
            if img.width < 1 or img.height < 1:
                raise RequestFailed("not an image: no pixels")
    except RequestFailed:
        raise
    except (ImageTooLarge, Image.DecompressionBombError):  # the latter only if a decoder checks again
        raise RequestFailed(BOMB) from None
    except UnidentifiedImageError:
        raise RequestFailed("not an image") from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a reason to skip, never to crash
        text = str(exc).lower()
        raise RequestFailed("truncated image" if "truncated" in text or "broken data stream" in text
                            else f"not an image: {type(exc).__name__}") from None
    if fmt not in EXTENSIONS:
        raise RequestFailed(f"unsupported format: {fmt or 'unknown'}")
    return EXTENSIONS[fmt]


def fetch_one(http: Http, out: Path, class_dir: Path, label: str, cand: Candidate, seen: SeenHashes) -> Outcome:
    """Download, check and atomically save one image (runs in a worker thread; never raises for bad input)."""
    stem = hashlib.sha256(cand.url.encode("utf-8")).hexdigest()[:24]
    try:
        leftover = _leftover(class_dir, stem)
        if leftover is not None:  # written by a run killed before it saved the manifest
            return Outcome(cand.url, _row(out, leftover, label, cand), adopted=True)
        data = http.download(cand.url)
        ext = decode(data)
        if not seen.claim(hashlib.sha256(data).hexdigest()):
            return Outcome(cand.url, reason="duplicate content")
        path = class_dir / f"{stem}{ext}"
        if not path.resolve().is_relative_to(class_dir.resolve()):
            return Outcome(cand.url, reason="unsafe file name")  # cannot happen with a hex stem; kept as a guard
        with _io.atomic_path(path) as tmp:
            tmp.write_bytes(data)
        return Outcome(cand.url, _row(out, path, label, cand))
    except RequestFailed as exc:
        return Outcome(cand.url, reason=exc.reason)
    except OSError as exc:
        return Outcome(cand.url, reason=f"write failed: {exc.strerror or type(exc).__name__}")


def _leftover(class_dir: Path, stem: str) -> Path | None:
    for ext in dict.fromkeys(EXTENSIONS.values()):
        if (class_dir / f"{stem}{ext}").is_file():
            return class_dir / f"{stem}{ext}"
    return None


def _row(out: Path, path: Path, label: str, cand: Candidate) -> dict[str, str]:
    """The manifest row prepare would write (hashes, size, status), plus where the image came from."""
    rel = path.relative_to(out).as_posix()
    row = describe_file(out, rel)
    row.update(path=rel, label=label, group="", source_url=cand.url, license=cand.license, creator=cand.creator)
    return {c: row.get(c, "") for c in MANIFEST_COLUMNS}
