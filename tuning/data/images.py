"""Reading any image file the way every step (prepare, predict) must agree on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
#: Refuse images with more pixels than this (decompression bombs); a 12k x 12k poster still fits.
MAX_PIXELS = 150_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


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


def load_rgb(path: Path, size: int) -> np.ndarray:
    """A ``size`` x ``size`` uint8 RGB array; JPEGs decode at reduced scale first, which is much faster."""
    with Image.open(path) as img:
        if img.format == "JPEG":
            img.draft("RGB", (size * 2, size * 2))
        img.seek(0)
        rgb = to_rgb(img)
        return np.asarray(rgb.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)
