"""Built-in demo dataset: three procedurally drawn 'film genre' classes written as image files.

``make search`` needs a dataset on a fresh machine without any download, so this module paints one with
numpy + PIL. The classes differ by *structure* (sharp busy shards, soft bokeh, flat outlined cel shapes),
never by a fixed colour: every image draws its own random palette, and nuisance (brightness, contrast,
noise, a distractor element from another class) keeps the task from being perfectly separable.

With ``family_size`` (``tuning data demo --groups``) the images come in families,
``<Class>/<class>_family_NNN/``: each family is one drawn scene and its members are variants of it (crop,
mirror, exposure, grain, a little of another scene of the class), like frames of one TV show. A model can then
score by recognising the family; a random split rewards that, a group split (``tuning data prepare
--group-by folder``) does not, which is what the demo is for.
"""

from __future__ import annotations

import colorsys
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from tuning.errors import DataError

CLASSES: tuple[str, ...] = ("Action", "Romance", "Anime")

Color = tuple[int, int, int]
Point = tuple[float, float]

_PNG_SHARE = 0.2  # the rest is JPEG, so the loader sees both formats
_TALL_SHARE = 0.3  # poster-like size x 1.25*size, so the resize step is exercised
_WIDE_SHARE = 0.1
_DISTRACTOR_P = 0.15


@dataclass(frozen=True)
class DemoResult:
    """Where the set was written and how many images each class folder holds."""

    out: Path
    counts: dict[str, int]


# --------------------------------------------------------------------------------------------- colours


def _hsv(h: float, s: float, v: float) -> Color:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return (round(r * 255), round(g * 255), round(b * 255))


def _random_color(rng: np.random.Generator, *, s: tuple[float, float], v: tuple[float, float]) -> Color:
    return _hsv(float(rng.random()), float(rng.uniform(*s)), float(rng.uniform(*v)))


def _palette(rng: np.random.Generator, n: int, *, s: tuple[float, float], v: tuple[float, float]) -> list[Color]:
    """Colours around one random base hue plus a random accent hue, so no class owns a colour."""
    base, accent = float(rng.random()), float(rng.random())
    out: list[Color] = []
    for _ in range(n):
        hue = (accent if rng.random() < 0.35 else base) + float(rng.normal(0.0, 0.06))
        out.append(_hsv(hue, float(rng.uniform(*s)), float(rng.uniform(*v))))
    return out


def _pick(rng: np.random.Generator, colors: list[Color]) -> Color:
    return colors[int(rng.integers(len(colors)))]


# --------------------------------------------------------------------------------------------- elements
# Each element draws onto an RGB image in place; the class painters combine them, and the distractor step
# borrows one element from another class.


def _star(cx: float, cy: float, r_in: float, r_out: float, n: int, phase: float) -> list[Point]:
    pts: list[Point] = []
    for k in range(2 * n):
        r = r_out if k % 2 == 0 else r_in
        a = phase + math.pi * k / n
        pts.append((cx + r * math.cos(a), cy + r * math.sin(a)))
    return pts


def _burst(img: Image.Image, rng: np.random.Generator, colors: list[Color]) -> None:
    """Explosion: jagged star polygons nested around one centre, plus sharp rays."""
    w, h = img.size
    d = ImageDraw.Draw(img)
    cx, cy = float(rng.uniform(0.15, 0.85) * w), float(rng.uniform(0.15, 0.85) * h)
    r_out = float(rng.uniform(0.2, 0.45) * min(w, h))
    for _ in range(int(rng.integers(10, 22))):
        a = float(rng.uniform(0, 2 * math.pi))
        spread = float(rng.uniform(0.03, 0.09))
        length = r_out * float(rng.uniform(1.0, 2.2))
        tip = (cx + length * math.cos(a), cy + length * math.sin(a))
        d.polygon([(cx + 0.2 * r_out * math.cos(a - spread * 4), cy + 0.2 * r_out * math.sin(a - spread * 4)),
                   tip,
                   (cx + 0.2 * r_out * math.cos(a + spread * 4), cy + 0.2 * r_out * math.sin(a + spread * 4))],
                  fill=_pick(rng, colors))
    n = int(rng.integers(7, 14))
    for level in range(int(rng.integers(2, 4))):
        scale = 1.0 - 0.3 * level
        d.polygon(_star(cx, cy, r_out * scale * 0.45, r_out * scale, n, float(rng.uniform(0, math.pi))),
                  fill=_pick(rng, colors))


def _shards(img: Image.Image, rng: np.random.Generator, colors: list[Color], n: int) -> None:
    """Sharp, elongated triangles: broken glass / debris."""
    w, h = img.size
    d = ImageDraw.Draw(img)
    for _ in range(n):
        x, y = float(rng.uniform(-0.1, 1.1) * w), float(rng.uniform(-0.1, 1.1) * h)
        a = float(rng.uniform(0, 2 * math.pi))
        length = float(rng.uniform(0.1, 0.45) * min(w, h))
        width = length * float(rng.uniform(0.08, 0.3))
        tip = (x + length * math.cos(a), y + length * math.sin(a))
        b1 = (x + width * math.cos(a + math.pi / 2), y + width * math.sin(a + math.pi / 2))
        b2 = (x - width * math.cos(a + math.pi / 2), y - width * math.sin(a + math.pi / 2))
        d.polygon([b1, tip, b2], fill=_pick(rng, colors))


def _streaks(img: Image.Image, rng: np.random.Generator, colors: list[Color], n: int) -> None:
    """Parallel-ish diagonal speed lines."""
    w, h = img.size
    d = ImageDraw.Draw(img)
    a0 = float(rng.choice([-1.0, 1.0])) * float(rng.uniform(0.5, 1.1))
    for _ in range(n):
        a = a0 + float(rng.normal(0.0, 0.08))
        x, y = float(rng.uniform(0, w)), float(rng.uniform(0, h))
        length = float(rng.uniform(0.3, 0.9) * max(w, h))
        dx, dy = length * math.cos(a) / 2, length * math.sin(a) / 2
        width = max(1, round(float(rng.uniform(0.005, 0.03)) * min(w, h)))
        d.line([(x - dx, y - dy), (x + dx, y + dy)], fill=_pick(rng, colors), width=width)


def _heart(cx: float, cy: float, r: float) -> list[Point]:
    pts: list[Point] = []
    for k in range(48):
        t = 2 * math.pi * k / 48
        x = 16 * math.sin(t) ** 3
        y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
        pts.append((cx + r * x / 17, cy - r * y / 17))
    return pts


def _bokeh(img: Image.Image, rng: np.random.Generator, colors: list[Color], n: int, *, hearts: int = 0) -> None:
    """Soft, translucent out-of-focus discs (and hearts), blurred before compositing."""
    w, h = img.size
    s = min(w, h)
    layer = img.copy()  # blur against the real background, else discs get dark rims
    mask = Image.new("L", img.size, 0)
    dl, dm = ImageDraw.Draw(layer), ImageDraw.Draw(mask)
    for _ in range(n):
        r = float(rng.uniform(0.05, 0.18) * s)
        x, y = float(rng.uniform(0, w)), float(rng.uniform(0, h))
        dl.ellipse([x - r, y - r, x + r, y + r], fill=_pick(rng, colors))
        dm.ellipse([x - r, y - r, x + r, y + r], fill=int(rng.integers(120, 230)))
    for _ in range(hearts):
        r = float(rng.uniform(0.1, 0.22) * s)
        pts = _heart(float(rng.uniform(0.2, 0.8) * w), float(rng.uniform(0.2, 0.8) * h), r)
        dl.polygon(pts, fill=_pick(rng, colors))
        dm.polygon(pts, fill=int(rng.integers(140, 220)))
    radius = float(rng.uniform(0.025, 0.05) * s)
    img.paste(layer.filter(ImageFilter.GaussianBlur(radius)), (0, 0), mask.filter(ImageFilter.GaussianBlur(radius)))


def _blob(cx: float, cy: float, r: float, rng: np.random.Generator) -> list[Point]:
    n = int(rng.integers(3, 8))
    angles = np.sort(rng.uniform(0, 2 * math.pi, n))
    radii = r * rng.uniform(0.6, 1.0, n)
    return [(cx + float(rr) * math.cos(float(a)), cy + float(rr) * math.sin(float(a))) for a, rr in zip(angles, radii)]


def _cel_shapes(img: Image.Image, rng: np.random.Generator, colors: list[Color], n: int) -> None:
    """Large flat fills with thick dark ink outlines, drawn at 2x and downsampled for clean edges."""
    w, h = img.size
    big = img.resize((2 * w, 2 * h), Image.Resampling.NEAREST)
    d = ImageDraw.Draw(big)
    s = 2 * min(w, h)
    ink = _hsv(float(rng.random()), float(rng.uniform(0.2, 0.7)), float(rng.uniform(0.03, 0.18)))
    line = max(2, round(float(rng.uniform(0.018, 0.03)) * s))
    for _ in range(n):
        cx, cy = float(rng.uniform(0.1, 0.9) * 2 * w), float(rng.uniform(0.1, 0.9) * 2 * h)
        r = float(rng.uniform(0.15, 0.4) * s)
        fill = _pick(rng, colors)
        if rng.random() < 0.5:
            rx, ry = r, r * float(rng.uniform(0.5, 1.0))
            d.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=fill, outline=ink, width=line)
        else:
            pts = _blob(cx, cy, r, rng)
            d.polygon(pts, fill=fill)
            d.line(pts + [pts[0]], fill=ink, width=line, joint="curve")
        if rng.random() < 0.4:  # flat highlight, the cel-shading look
            hr = r * float(rng.uniform(0.1, 0.2))
            d.ellipse([cx - hr, cy - r * 0.3 - hr, cx + hr, cy - r * 0.3 + hr], fill=(250, 250, 250))
    img.paste(big.resize((w, h), Image.Resampling.LANCZOS))


# --------------------------------------------------------------------------------------------- classes


def _paint_action(img: Image.Image, rng: np.random.Generator) -> float:
    """Busy, high-contrast and grainy; returns the grain (noise sigma) to add."""
    colors = _palette(rng, 5, s=(0.3, 1.0), v=(0.15, 1.0))
    colors += [_random_color(rng, s=(0.0, 0.3), v=(0.0, 0.2)), _random_color(rng, s=(0.0, 0.5), v=(0.85, 1.0))]
    _linear_gradient(img, rng, _pick(rng, colors), _pick(rng, colors))
    _shards(img, rng, colors, int(rng.integers(6, 25)))
    if rng.random() < 0.8:
        _burst(img, rng, colors)
    _streaks(img, rng, colors, int(rng.integers(4, 12)))
    _shards(img, rng, colors, int(rng.integers(4, 10)))
    return float(rng.uniform(6.0, 26.0))


def _paint_romance(img: Image.Image, rng: np.random.Generator) -> float:
    """Smooth low-contrast gradient with soft bokeh and hearts; mostly clean, a quarter get light film grain."""
    v = float(rng.uniform(0.25, 0.85))
    colors = _palette(rng, 5, s=(0.1, 0.6), v=(v - 0.12, v + 0.12))
    _linear_gradient(img, rng, colors[0], colors[1])
    lights = [_hsv(colorsys.rgb_to_hsv(*(c / 255 for c in col))[0], float(rng.uniform(0.1, 0.5)),
                   min(v + float(rng.uniform(0.1, 0.35)), 1.0)) for col in colors]  # bokeh glows lighter
    hearts = int(rng.integers(0, 3))
    _bokeh(img, rng, lights + colors[2:], int(rng.integers(5, 14)), hearts=hearts)
    if rng.random() < 0.5:
        _bokeh(img, rng, lights, int(rng.integers(3, 8)))
    return float(rng.uniform(4.0, 10.0)) if rng.random() < 0.25 else float(rng.uniform(0.5, 3.0))  # film grain


def _paint_anime(img: Image.Image, rng: np.random.Generator) -> float:
    """Big flat colour regions with thick dark outlines; clean, little grain."""
    colors = _palette(rng, 6, s=(0.25, 0.9), v=(0.45, 1.0))
    w, h = img.size
    d = ImageDraw.Draw(img)
    d.rectangle([0, 0, w, h], fill=colors[0])
    if rng.random() < 0.6:  # flat 'sky / ground' split
        y0, y1 = float(rng.uniform(0.4, 0.8) * h), float(rng.uniform(0.4, 0.8) * h)
        d.polygon([(0, y0), (w, y1), (w, h), (0, h)], fill=colors[1])
    _cel_shapes(img, rng, colors[1:], int(rng.integers(3, 7)))
    return float(rng.uniform(0.5, 3.0))


def _linear_gradient(img: Image.Image, rng: np.random.Generator, c0: Color, c1: Color) -> None:
    w, h = img.size
    a = float(rng.uniform(0, 2 * math.pi))
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    t = xs / max(w - 1, 1) * math.cos(a) + ys / max(h - 1, 1) * math.sin(a)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    arr = np.asarray(c0, np.float32) * (1 - t[..., None]) + np.asarray(c1, np.float32) * t[..., None]
    img.paste(Image.fromarray(arr.round().astype(np.uint8), "RGB"))


_Painter = Callable[[Image.Image, np.random.Generator], float]
_PAINTERS: tuple[_Painter, ...] = (_paint_action, _paint_romance, _paint_anime)


def _distractor(img: Image.Image, rng: np.random.Generator, style: int) -> None:
    """One element in the style of class ``style`` so the classes are not perfectly separable."""
    colors = _palette(rng, 4, s=(0.2, 1.0), v=(0.1, 1.0))
    if style == 0:
        if rng.random() < 0.5:
            _shards(img, rng, colors, int(rng.integers(3, 7)))
        else:
            _streaks(img, rng, colors, int(rng.integers(2, 5)))
    elif style == 1:
        _bokeh(img, rng, colors, int(rng.integers(2, 5)), hearts=int(rng.integers(0, 2)))
    else:
        _cel_shapes(img, rng, colors, 1)


def _render(ci: int, rng: np.random.Generator, size: int) -> Image.Image:
    """Draw one image of class ``ci``; all randomness comes from ``rng``."""
    shape = rng.random()
    w, h = size, size
    if shape < _TALL_SHARE:
        h = int(size * 1.25)
    elif shape < _TALL_SHARE + _WIDE_SHARE:
        w = int(size * 1.25)
    img = Image.new("RGB", (w, h))
    grain = _PAINTERS[ci](img, rng)
    if rng.random() < _DISTRACTOR_P:
        others = [k for k in range(len(CLASSES)) if k != ci]
        _distractor(img, rng, others[int(rng.integers(len(others)))])
    arr = np.asarray(img, np.float32)
    mean = arr.mean()
    arr = (arr - mean) * float(rng.uniform(0.75, 1.25)) + mean + float(rng.uniform(-30.0, 30.0))
    noise = rng.normal(0.0, grain, (h, w, 1)) + rng.normal(0.0, grain * 0.35, (h, w, 3))
    arr = arr + noise.astype(np.float32)
    return Image.fromarray(np.clip(arr, 0, 255).round().astype(np.uint8), "RGB")


# --------------------------------------------------------------------------------------------- writing


def _check_int(value: object, option: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < minimum:
        raise DataError(f"{option} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _variant(base: Image.Image, other: Image.Image, rng: np.random.Generator) -> Image.Image:
    """One member of a family: the family's scene cropped, maybe mirrored, re-exposed, with fresh grain and a
    faint second scene of the class, so members look alike without being near copies."""
    w, h = base.size
    scale = float(rng.uniform(0.8, 0.95))
    cw, ch = int(w * scale), int(h * scale)
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    img = base.crop((x0, y0, x0 + cw, y0 + ch)).resize((w, h), Image.Resampling.BILINEAR)
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    arr = np.asarray(img, np.float32) * (1 - (mix := float(rng.uniform(0.15, 0.3))))
    arr += np.asarray(other.resize((w, h), Image.Resampling.BILINEAR), np.float32) * mix
    mean = arr.mean()
    arr = (arr - mean) * float(rng.uniform(0.85, 1.15)) + mean + float(rng.uniform(-20.0, 20.0))
    arr += rng.normal(0.0, float(rng.uniform(2.0, 8.0)), arr.shape).astype(np.float32)
    return Image.fromarray(np.clip(arr, 0, 255).round().astype(np.uint8), "RGB")


def _save(img: Image.Image, path: Path, rng: np.random.Generator) -> None:
    if rng.random() < _PNG_SHARE:
        img.save(path.with_suffix(".png"), format="PNG")
    else:
        img.save(path.with_suffix(".jpg"), format="JPEG", quality=int(rng.integers(70, 96)))


def _write_class(folder: Path, ci: int, *, per_class: int, size: int, seed: int, family_size: int = 0) -> int:
    folder.mkdir()
    prefix = CLASSES[ci].lower()
    digits = max(4, len(str(per_class)))
    if not family_size:
        for i in range(per_class):
            rng = np.random.default_rng([seed, ci, i])  # per image, so order of generation never matters
            _save(_render(ci, rng, size), folder / f"{prefix}_{i + 1:0{digits}d}", rng)
        return per_class
    families = -(-per_class // family_size)
    for f in range(families):
        family = folder / f"{prefix}_family_{f + 1:03d}"  # unique across classes: a group name is global
        family.mkdir()
        base = _render(ci, np.random.default_rng([seed, ci, f, 1 << 20]), size)  # the family's own scene
        for m in range(min(family_size, per_class - f * family_size)):
            rng = np.random.default_rng([seed, ci, f, m])
            other = _render(ci, np.random.default_rng([seed, ci, f, m, 1 << 21]), size)
            _save(_variant(base, other, rng), family / f"{prefix}_{f * family_size + m + 1:0{digits}d}", rng)
    return per_class


def make_demo(out: Path, *, per_class: int = 300, size: int = 128, seed: int = 0,
              family_size: int = 0) -> DemoResult:
    """Write the demo set to ``out/<Class>/`` atomically (temp sibling, then rename).

    Refuses an existing ``out`` so a user's data is never mixed with or replaced by demo images; the same
    ``(per_class, size, seed, family_size)`` always yields byte-identical files. ``family_size`` > 0 writes
    families of that many related images, ``out/<Class>/<class>_family_NNN/`` (0: independent images).
    """
    out = Path(out)
    per_class = _check_int(per_class, "--per-class", 1)
    size = _check_int(size, "--size", 32)
    seed = _check_int(seed, "--seed", 0)
    family_size = _check_int(family_size, "--family-size", 0)
    if out.exists() or out.is_symlink():
        raise DataError(f"{out} already exists; remove it or choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():  # left by an earlier killed run that had the same pid
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        counts = {
            name: _write_class(tmp / name, ci, per_class=per_class, size=size, seed=seed, family_size=family_size)
            for ci, name in enumerate(CLASSES)
        }
        if out.exists() or out.is_symlink():  # created by someone else while we were drawing
            raise DataError(f"{out} already exists; remove it or choose another --out")
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return DemoResult(out=out, counts=counts)
