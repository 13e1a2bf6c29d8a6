"""Reading any image file the way every step (prepare, dedup, predict) must agree on."""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
#: Refuse images with more pixels than this (decompression bombs); a 12k x 12k poster still fits.
MAX_PIXELS = 150_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


class ImageTooLarge(ValueError):
    """Declared dimensions above ``MAX_PIXELS``: decoding would take gigabytes, so the file is refused unread."""


def image_files(folder: Path) -> list[Path]:
    """The image files under ``folder``, nested folders included, sorted; hidden files (``.DS_Store``,
    ``._x.jpg`` resource forks) are never images a person put there."""
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


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
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = max(float(arr.max()), 1.0)
        img = Image.fromarray(np.clip(arr / (65535.0 if top > 255 else 255.0) * 255.0, 0, 255).astype(np.uint8))
    return img.convert("RGB")


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
