"""Reading any image file the way every step (prepare, dedup, predict) must agree on, and finding them on disk.

``scan_class_folders`` is the one rule for which files under a ``<class>/**`` tree are images: import walks a
person's folder with it and the manifest walks ``raw/`` with it, so what import skips, prepare skips too, for the
same reason, counted the same way.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
#: Refuse images with more pixels than this (decompression bombs); a 12k x 12k poster still fits.
MAX_PIXELS = 150_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS

# Why a file found while walking is not an image to use (the same words in import, prepare, stats).
SKIP_HIDDEN = "hidden file"
SKIP_HIDDEN_FOLDER = "hidden folder (not searched)"
SKIP_NOT_IMAGE = "not an image file"
SKIP_LOOSE = "not in a class folder"
SKIP_LINK_OUT = "link points outside the folder (not followed)"
SKIP_LINKED_FOLDER = "linked folder (not followed)"
SKIP_LOOP = "symlink loop"
SKIP_BROKEN_LINK = "broken link"
SKIP_SPECIAL = "not a regular file (FIFO, socket or device)"
SKIP_UNLISTABLE = "folder cannot be read"
SKIP_BAD_NAME = "name is not valid UTF-8; rename it (tuning data import copies such files under a safe name)"
#: The bit depths a 16-bit container may really hold (cameras and scanners write 10, 12 or 14 bits).
BIT_DEPTHS = (8, 10, 12, 14, 16)


class ImageTooLarge(ValueError):
    """Declared dimensions above ``MAX_PIXELS``: decoding would take gigabytes, so the file is refused unread."""


# ----- finding image files ---------------------------------------------------------------------------------
@dataclass
class ClassScan:
    """What a walk of ``root/<class>/**`` found: class folders, image files with their class, and the rest.

    ``skipped`` holds (path relative to ``root`` as printable text, reason); a name that is not valid UTF-8 is
    shown with its bytes escaped (``bad\\xffname.jpg``), so it can always be printed and written.
    """

    root: Path
    classes: list[Path] = field(default_factory=list)
    files: list[tuple[Path, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def is_utf8(name: str) -> bool:
    """Whether a file name decoded by Python (surrogate escapes for bad bytes) is real UTF-8 text."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable(name: str) -> str:
    """``name`` as valid text: bytes that are not UTF-8 become ``\\xff`` escapes (what ``ls -b`` shows)."""
    return os.fsencode(name).decode("utf-8", "backslashreplace") if not is_utf8(name) else name


def safe_name(name: str) -> str:
    """A valid UTF-8 name for a file or folder whose name is not: bad bytes become ``_``, plus a short hash of
    the original bytes so two names differing only there stay two files. Valid names come back unchanged."""
    if is_utf8(name):
        return name
    raw = os.fsencode(name)
    clean = raw.decode("utf-8", "replace").replace("\ufffd", "_")
    stem, dot, suffix = clean.rpartition(".") if "." in clean.lstrip(".") else (clean, "", "")
    return f"{stem}-{hashlib.sha256(raw).hexdigest()[:8]}{dot}{suffix}"


def _entry_kind(path: Path, root_real: Path) -> tuple[str, str]:
    """("dir" | "file" | "skip", reason) for one directory entry, never following a link out of ``root_real``.

    A linked folder is never entered (that is how a walk loops or escapes); a linked file is used only when its
    target lies inside the folder being walked, so a link named ``x.jpg`` to ``/etc/passwd`` is never copied.
    """
    try:
        lst = os.lstat(path)
    except OSError as exc:
        return "skip", f"cannot be read: {exc.strerror or type(exc).__name__}"
    if stat.S_ISLNK(lst.st_mode):
        try:
            st = os.stat(path)
        except OSError as exc:
            return "skip", SKIP_LOOP if exc.errno == errno.ELOOP else SKIP_BROKEN_LINK
        if stat.S_ISDIR(st.st_mode):
            return "skip", SKIP_LINKED_FOLDER
        if not Path(os.path.realpath(path)).is_relative_to(root_real):
            return "skip", SKIP_LINK_OUT
    else:
        st = lst
    if stat.S_ISDIR(st.st_mode):
        return "dir", ""
    if stat.S_ISREG(st.st_mode):
        return "file", ""
    return "skip", SKIP_SPECIAL


def _listing(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


def _walk(folder: Path, rel: str, root_real: Path, scan: ClassScan, label: str) -> None:
    try:
        names = _listing(folder)
    except OSError as exc:
        scan.skipped.append((printable(rel), f"{SKIP_UNLISTABLE}: {exc.strerror or type(exc).__name__}"))
        return
    for name in names:
        path, sub = folder / name, f"{rel}/{name}"
        kind, reason = _entry_kind(path, root_real)
        if name.startswith("."):
            scan.skipped.append((printable(sub), SKIP_HIDDEN_FOLDER if kind == "dir" else SKIP_HIDDEN))
        elif kind == "dir":
            _walk(path, sub, root_real, scan, label)
        elif kind == "skip":
            scan.skipped.append((printable(sub), reason))
        elif path.suffix.lower() not in IMAGE_SUFFIXES:
            scan.skipped.append((printable(sub), SKIP_NOT_IMAGE))
        else:
            scan.files.append((path, label))


def scan_class_folders(root: Path) -> ClassScan:
    """Every image file under ``root/<class>/**`` with its class, and every other entry with why it is skipped.

    Hidden files and folders (``.DS_Store``, ``.thumbnails/``) are never images a person put there; links are
    followed only to files inside ``root``; FIFOs and devices are never opened (reading a FIFO blocks for ever).
    Files directly in ``root`` belong to no class. Names are kept as the OS gives them (bad bytes included):
    the caller decides whether to rename or skip them.
    """
    root = Path(root)
    root_real = Path(os.path.realpath(root))
    scan = ClassScan(root)
    try:
        names = _listing(root)
    except OSError as exc:
        scan.skipped.append((printable(str(root)), f"{SKIP_UNLISTABLE}: {exc.strerror or type(exc).__name__}"))
        return scan
    for name in names:
        path = root / name
        kind, reason = _entry_kind(path, root_real)
        if name.startswith("."):
            scan.skipped.append((printable(name), SKIP_HIDDEN_FOLDER if kind == "dir" else SKIP_HIDDEN))
        elif kind == "dir":
            scan.classes.append(path)
        elif kind == "skip":
            scan.skipped.append((printable(name), reason))
        else:
            scan.skipped.append((printable(name), SKIP_LOOSE))
    for class_dir in scan.classes:
        _walk(class_dir, class_dir.name, root_real, scan, class_dir.name)
    return scan


def image_files(folder: Path) -> list[Path]:
    """The image files under ``folder`` (one class folder), by the walking rule of ``scan_class_folders``."""
    folder = Path(folder)
    scan = ClassScan(folder)
    _walk(folder, folder.name, Path(os.path.realpath(folder)), scan, folder.name)
    return [path for path, _ in scan.files]


def open_image(source: Path | IO[bytes]) -> Image.Image:
    """``Image.open`` that refuses decompression bombs from the header alone, before any pixel is decoded.

    Pillow only warns between ``MAX_IMAGE_PIXELS`` and twice that, and then decodes the whole thing; here any
    image above ``MAX_PIXELS`` is an error, so a crafted 13k x 13k PNG of a few bytes cannot eat the memory.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(source)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageTooLarge(f"too many pixels, refused as a decompression bomb ({exc})") from None
    if img.width * img.height > MAX_PIXELS:
        img.close()
        raise ImageTooLarge(f"{img.width}x{img.height} pixels is over the {MAX_PIXELS:,} limit "
                            "(refused as a decompression bomb)")
    return img


def to_rgb(img: Image.Image) -> Image.Image:
    """Upright RGB: EXIF orientation applied, transparency flattened onto white, any mode converted."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    if img.mode.startswith("I") or img.mode == "F":
        img = Image.fromarray(_deep_to_uint8(np.asarray(img), img.mode))
    return img.convert("RGB")


def _deep_to_uint8(arr: np.ndarray, mode: str) -> np.ndarray:
    """8-bit grey from a 16-bit, 32-bit integer or float image, scaled by what its values can mean.

    No header field tells how many of 16 bits a camera used (PNG's sBIT is not exposed by Pillow), so the depth
    is read from the value range: the smallest of 8, 10, 12, 14 or 16 bits that holds the maximum, which puts
    12-bit data (max <= 4095) on 0..4095 instead of a near-black 0..65535. An honest limit of that rule: a dark
    16-bit image whose brightest pixel is <= 4095 is brightened as if it were 12-bit. 32-bit integers get the
    same rule inside 0..65535. Floats in 0..1 (numpy's convention) are scaled by 255, floats in 0..255 (an 8-bit
    image saved as float) kept. Anything else (negative values, NaN, huge ranges) has no meaning as a picture a
    person would recognise, so it is refused with its range rather than stretched into a guess.
    """
    values = arr.astype(np.float64)
    if values.size == 0:
        raise ValueError(f"{mode} image has no pixels")
    if not np.isfinite(values).all():
        raise ValueError(f"{'float' if mode == 'F' else mode} image holds NaN or infinite values")
    low, high = float(values.min()), float(values.max())
    if mode == "F":
        if low >= 0 and high <= 1.0:
            scale = 1.0
        elif low >= 0 and high <= 255.0:
            scale = 255.0
        else:
            raise ValueError(f"float image with values {low:g}..{high:g}: not 0..1 or 0..255, no known scale")
    else:
        if low < 0 or high > 65535:
            raise ValueError(f"{mode} image with values {low:g}..{high:g}: outside 0..65535, no known scale")
        scale = float(next(2**bits - 1 for bits in BIT_DEPTHS if high <= 2**bits - 1))
    return np.clip(np.rint(values / scale * 255.0), 0, 255).astype(np.uint8)


def load_small_rgb(path: Path, size: int) -> Image.Image:
    """Upright RGB whose short side is still at least about ``size`` px, decoded as cheaply as the format allows.

    JPEGs decode at 1/2, 1/4 or 1/8 scale (``draft``), other formats shrink by an integer factor right after
    decoding, so hashing or thumbnailing thousands of photos costs a fraction of a full decode.
    """
    with open_image(path) as img:
        if img.format == "JPEG":
            img.draft("RGB", (size, size))
        img.seek(0)
        rgb = to_rgb(img)
    factor = min(rgb.width, rgb.height) // max(size, 1)
    return rgb.reduce(factor) if factor >= 2 else rgb


def load_raw_rgb(path: Path) -> np.ndarray:
    """The whole image as (height, width, 3) uint8 RGB, upright, transparency on white: what exported models take."""
    with open_image(path) as img:
        img.seek(0)
        return np.asarray(to_rgb(img), dtype=np.uint8)


def load_rgb(path: Path, size: int) -> np.ndarray:
    """A ``size`` x ``size`` uint8 RGB array, resized by the exported model's own resize (``tuning.resize``).

    The file is decoded at full size (no JPEG draft): a shipped model receives full-size pixels, so the
    dataset must be made from them too.
    """
    from tuning.resize import resize_rgb

    return resize_rgb(load_raw_rgb(path), size)


def unreadable_reason(exc: BaseException) -> str:
    """A short, stable reason: the same failure reads the same in every row, so stats can count reasons."""
    if isinstance(exc, UnidentifiedImageError):
        return "not an image (unknown format)"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return re.sub(r"<[^<>]* at 0x[0-9a-f]+>", "file", text)[:120]
