"""Generated test pictures shared by the dedup and hashing tests (no real posters: they carry no licence)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw


def picture(seed: int, size: tuple[int, int] = (160, 120), *, shapes: int | None = None) -> Image.Image:
    """A poster-like image: a gradient with a few coloured shapes, different for every seed.

    ``shapes`` draws other shapes on ``seed``'s gradient: a different picture of the same colours.
    """
    rng = np.random.default_rng(seed)
    w, h = size
    base = np.linspace(rng.integers(0, 255, 3), rng.integers(0, 255, 3), h, dtype=np.float64)
    rng = rng if shapes is None else np.random.default_rng(shapes)
    img = Image.fromarray(np.repeat(base[:, None, :], w, axis=1).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x0, y0 = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
        box = (x0, y0, x0 + int(rng.integers(15, w // 2)), y0 + int(rng.integers(15, h // 2)))
        fill = tuple(int(v) for v in rng.integers(0, 255, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
    return img
