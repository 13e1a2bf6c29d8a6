"""Perceptual hashes of image files: what dedup compares and the manifest records.

Kept apart from dedup (the grouping step) so the manifest, a floor every data step stands on, can hash a file
without importing a later step. Every hash is a 64-bit integer (colorhash's 42 bits padded), with the hash of the
mirror image beside it.

Cropped copies need more than one hash per image: a poster cut by 10% on one side is 20 to 30 bits from the whole
poster's phash, but within a few bits of the phash of the same region of the whole poster. So each image also gets
the phashes of ``WINDOWS``, sub-windows of itself cut by 0, 5 or 10% on each side (from the same small decode, two
matrix products for all of them); any crop of up to about 12% per side is within 2.5% per side of one of them.
``crop_similarity`` is the cheap geometric check that tells a real crop from two different pictures whose hashes
met by chance.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from tuning.data.images import load_small_rgb, unreadable_reason
from tuning.errors import UnknownNameError

#: The hash functions dedup can group by (imagehash's names; ``ahash`` is its ``average_hash``).
HASH_KINDS = ("phash", "dhash", "ahash", "whash", "colorhash")
#: Images are decoded to at least this short side before hashing (every hash looks at 32 px or less).
DECODE_SIZE = 64
#: Below this many files a process pool costs more to start than it saves.
POOL_MIN_FILES = 48
#: How much a window cuts off each side (fractions of width or height); 0, 5 and 10% per side cover every crop
#: of up to 12.5% per side within 2.5% per side, which is as close as the 5% crops the full hash already finds.
WINDOW_CUTS = (0.0, 0.05, 0.1)
#: (cut at the start, cut at the end) of one axis; a window is one vertical span times one horizontal span.
_SPANS = tuple((a, b) for a in WINDOW_CUTS for b in WINDOW_CUTS)
#: (left, top, right, bottom) cut of each window, in the order of ``window_phashes``; the uncut window (the whole
#: image, whose hash is the image's own) is left out.
WINDOWS = tuple((h[0], v[0], h[1], v[1]) for v in _SPANS for h in _SPANS if (v, h) != ((0.0, 0.0), (0.0, 0.0)))
#: Samples per side of the geometric check's grey thumbnails, and the cuts per side it tries (every 2.5% to 12.5%).
CHECK_SIZE = 16
CHECK_CUTS = (0.0, 0.025, 0.05, 0.075, 0.1, 0.125)
#: A crop keeps its own aspect ratio: boxes whose aspect differs from the crop's by more than this (log ratio) are
#: not tried, which keeps two different posters from matching through a squeezed box.
CHECK_ASPECT = 0.04


def hash_function(kind: str) -> Callable[..., Any]:
    import imagehash

    if kind not in HASH_KINDS:
        raise UnknownNameError("hash", kind, HASH_KINDS)
    return imagehash.average_hash if kind == "ahash" else getattr(imagehash, kind)


def _to_uint(hash_: Any) -> int:
    bits = np.asarray(hash_.hash, dtype=bool).ravel()
    if bits.size > 64:
        raise ValueError(f"{bits.size}-bit hash does not fit in 64 bits")
    return int(np.packbits(np.concatenate([np.zeros(64 - bits.size, dtype=bool), bits])).view(">u8")[0])


def _dct_rows(n: int = 32, keep: int = 8) -> np.ndarray:
    """The first ``keep`` rows of scipy's unnormalised DCT-II matrix, so ``D @ X @ D.T`` is ``dct(dct(X).T).T``."""
    k, i = np.arange(keep)[:, None], np.arange(n)[None, :]
    return 2.0 * np.cos(np.pi * k * (2 * i + 1) / (2 * n))


_DCT8 = _dct_rows()
#: (-1)**column: mirroring the 32 x 32 input negates the odd horizontal frequencies and nothing else.
_MIRROR_SIGNS = np.where(np.arange(8) % 2, -1.0, 1.0)[None, :]


def phash_pair(img: Image.Image) -> tuple[int, int]:
    """imagehash.phash of the image and of its mirror image from one 8 x 8 DCT (two matrix products).

    The same steps as ``imagehash.phash`` (grey, Lanczos to 32 x 32, the 8 x 8 lowest DCT frequencies against
    their median) without its two full 32 x 32 scipy transforms per image, and the mirror hash for free.
    """
    pixels = np.asarray(img.convert("L").resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
    low = _DCT8 @ pixels @ _DCT8.T
    flipped = low * _MIRROR_SIGNS
    return _bits_to_uint(low > np.median(low)), _bits_to_uint(flipped > np.median(flipped))


def _bits_to_uint(bits: np.ndarray) -> int:
    return int(np.packbits(bits.ravel()).view(">u8")[0])


def _lanczos_rows(size: int, lo: float | np.ndarray, hi: float | np.ndarray, out: int) -> np.ndarray:
    """(out, size) weights resampling the span [lo, hi) of ``size`` pixels to ``out``, like Pillow's LANCZOS.

    Pillow's antialiased kernel (support 3, widened by the downscale factor), as a matrix, so that resizing many
    windows of one image is one matrix product instead of one ``Image.resize`` per window. Arrays of ``lo`` and
    ``hi`` give one such matrix per span, (spans, out, size), in one pass.
    """
    lo, hi = np.asarray(lo, dtype=np.float64)[..., None, None], np.asarray(hi, dtype=np.float64)[..., None, None]
    scale = (hi - lo) / out
    widen = np.maximum(scale, 1.0)
    centre = lo + (np.arange(out)[:, None] + 0.5) * scale
    support = 3.0 * widen
    band = int(np.ceil(2 * support.max())) + 2  # pixels a row can touch: compute only those, then scatter
    if band >= size:
        columns = np.broadcast_to(np.arange(size), centre.shape[:-1] + (size,))
    else:
        first = np.clip(np.floor(centre - support), 0, size - band).astype(np.int64)
        columns = first + np.arange(band)
    x = (columns - centre + 0.5) / widen
    near = np.abs(x) < 3
    safe = np.where(near & (x != 0), x, 1.0)
    weights = np.where(near, np.sin(np.pi * safe) * np.sin(np.pi * safe / 3) * 3 / (np.pi * safe) ** 2, 0.0)
    weights = np.where(x == 0, 1.0, weights)  # sinc(0) * sinc(0)
    weights /= weights.sum(axis=-1, keepdims=True)
    if band >= size:
        return weights
    dense = np.zeros(weights.shape[:-1] + (size,))
    np.put_along_axis(dense, columns, weights, axis=-1)
    return dense


@lru_cache(maxsize=256)
def _window_rows(size: int) -> np.ndarray:
    """The 8 lowest DCT rows of every span of ``_SPANS`` over ``size`` pixels, stacked: (8 * spans, size)."""
    cuts = np.array(_SPANS)
    rows = _DCT8 @ _lanczos_rows(size, cuts[:, 0] * size, size - cuts[:, 1] * size, 32)  # (spans, 8, size)
    return rows.reshape(-1, size).astype(np.float32)


def window_phashes(img: Image.Image) -> np.ndarray:
    """phash of every window in ``WINDOWS`` as uint64, from one pair of matrix products over the grey image.

    Each window goes through the same steps as ``phash_pair`` (grey, Lanczos to 32 x 32, 8 x 8 DCT against its
    median) but in float32 without rounding between the passes, so a window's hash may differ from imagehash's of
    the cut image by a bit or two; they are compared with a margin anyway. About 0.07 ms per image on one core.
    """
    grey = np.asarray(img.convert("L"), dtype=np.float32)
    h, w = grey.shape
    spans = len(_SPANS)
    low = _window_rows(h) @ grey @ _window_rows(w).T  # block (i, j): vertical span i, horizontal span j
    blocks = low.reshape(spans, 8, spans, 8).transpose(0, 2, 1, 3).reshape(spans * spans, 64)[1:]
    middle = np.sort(blocks, axis=1)  # a sort of 64 values beats np.median's partition here (0.01 against 0.05 ms)
    bits = blocks > (middle[:, 31:32] + middle[:, 32:33]) / 2
    return np.packbits(bits, axis=1).view(">u8").ravel().astype(np.uint64)


def grey_thumbnail(path: str | Path) -> np.ndarray:
    """The image in grey at about ``DECODE_SIZE`` px on the short side, as float64: what ``crop_similarity`` takes."""
    return np.asarray(load_small_rgb(Path(path), DECODE_SIZE).convert("L"), dtype=np.float64)


def _check_spans() -> list[tuple[float, float]]:
    return [(a, b) for a in CHECK_CUTS for b in CHECK_CUTS]


@lru_cache(maxsize=256)
def _check_rows(size: int) -> np.ndarray:
    cuts = np.array(_check_spans())
    rows = _lanczos_rows(size, cuts[:, 0] * size, size - cuts[:, 1] * size, CHECK_SIZE)
    return rows.reshape(-1, size).astype(np.float32)


def _unit(v: np.ndarray) -> np.ndarray:
    v = v - v.mean(axis=-1, keepdims=True)
    return v / (np.linalg.norm(v, axis=-1, keepdims=True) + 1e-9)


def crop_similarity(crop: np.ndarray, whole: np.ndarray) -> float:
    """Best normalised cross-correlation of ``crop`` against the boxes of ``whole`` it could have been cut from.

    Both are grey thumbnails (``grey_thumbnail``). The boxes cut 0 to 12.5% off each side in steps of 2.5% and
    keep ``crop``'s aspect ratio within ``CHECK_ASPECT``; each is resampled to ``CHECK_SIZE`` squared, all of them
    with two matrix products. A crop scores near 1 against its original, two different posters whose hashes met
    by chance far less (the threshold is calibrated in ``benchmarks/data_bench.py``). Returns -1 when no box keeps
    the aspect ratio (one image is far wider than the other could be cut to).
    """
    hc, wc = crop.shape
    hw, ww = whole.shape
    target = _unit((_lanczos_rows(hc, 0, hc, CHECK_SIZE) @ crop @ _lanczos_rows(wc, 0, wc, CHECK_SIZE).T).ravel())
    kept = np.array([1.0 - a - b for a, b in _check_spans()])
    aspect = np.log((kept[None, :] * ww) / (kept[:, None] * hw)) - np.log(wc / hc)
    rows, cols = np.nonzero(np.abs(aspect) <= CHECK_ASPECT)  # (vertical span, horizontal span) pairs to try
    if len(rows) == 0:
        return -1.0
    n = len(kept)
    grid = (_check_rows(hw) @ whole.astype(np.float32) @ _check_rows(ww).T).reshape(n, CHECK_SIZE, n, CHECK_SIZE)
    boxes = grid[rows, :, cols, :].reshape(len(rows), CHECK_SIZE * CHECK_SIZE).astype(np.float64)
    return float((_unit(boxes) @ target).max())


def hash_file(path: str | Path, kind: str = "phash", *, mirror: bool = True) -> tuple[int, int]:
    """(hash, hash of the mirror image) of one file as integers; decoded small, since hashes look at <= 32 px."""
    return _hash_decoded(load_small_rgb(Path(path), DECODE_SIZE), kind, mirror)


def _hash_decoded(img: Image.Image, kind: str, mirror: bool) -> tuple[int, int]:
    fn = hash_function(kind)
    if kind == "phash":
        value, flipped = phash_pair(img)
        return value, flipped if mirror else value
    value = _to_uint(fn(img))
    return value, _to_uint(fn(ImageOps.mirror(img))) if mirror else value


def hash_file_windows(path: str | Path, *, mirror: bool = True) -> tuple[int, int, np.ndarray]:
    """phash, mirror phash and ``window_phashes`` of one file, from one small decode."""
    img = load_small_rgb(Path(path), DECODE_SIZE)
    return (*_hash_decoded(img, "phash", mirror), window_phashes(img))


HashResult = tuple[int, int] | tuple[int, int, np.ndarray] | str


def _hash_or_reason(path: str, kind: str, mirror: bool, windows: bool) -> HashResult:
    try:
        return hash_file_windows(path, mirror=mirror) if windows else hash_file(path, kind, mirror=mirror)
    except Exception as exc:  # noqa: BLE001 - a file that changed since the manifest is skipped, not fatal
        return unreadable_reason(exc)


def hash_files(
    paths: list[Path], kind: str = "phash", *, mirror: bool = True, windows: bool = False, workers: int = 2,
    progress: Callable[[int, int], None] | None = None,
) -> list[HashResult]:
    """Hash of each file (or why it failed), on ``workers`` processes: decoding is CPU-bound and holds the GIL.

    With ``windows`` (phash only) each result also holds the file's ``window_phashes``, for finding crops.
    """
    hash_function(kind)
    if windows and kind != "phash":
        raise ValueError(f"window hashes are phashes; got kind {kind!r}")
    job = partial(_hash_or_reason, kind=kind, mirror=mirror, windows=windows)
    names = [str(p) for p in paths]
    results: list[HashResult] = []
    if workers > 1 and len(names) >= POOL_MIN_FILES:
        with ProcessPoolExecutor(max_workers=workers, initializer=one_blas_thread) as pool:
            for result in pool.map(job, names, chunksize=max(1, min(64, len(names) // (workers * 8)))):
                results.append(result)
                if progress:
                    progress(len(results), len(names))
    else:
        with one_blas_thread():
            for name in names:
                results.append(job(name))
                if progress:
                    progress(len(results), len(names))
    return results


def one_blas_thread() -> Any:
    """Limit numpy's BLAS to one thread (for good in a pool worker; as a context manager in this process).

    The window hashes and the crop check multiply many tiny matrices; a threaded BLAS then spends its time waking
    threads, and on a busy machine waiting for a core: 5 to 10 times slower than one thread (measured on 2 CPUs).
    """
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")
