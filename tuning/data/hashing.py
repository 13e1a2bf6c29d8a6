"""Perceptual hashes of image files: what dedup compares and the manifest records.

Kept apart from dedup (the grouping step) so the manifest, a floor every data step stands on, can hash a file
without importing a later step. Every hash is a 64-bit integer (colorhash's 42 bits padded), with the hash of the
mirror image beside it.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from functools import partial
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


def hash_file(path: str | Path, kind: str = "phash", *, mirror: bool = True) -> tuple[int, int]:
    """(hash, hash of the mirror image) of one file as integers; decoded small, since hashes look at <= 32 px."""
    fn = hash_function(kind)
    img = load_small_rgb(Path(path), DECODE_SIZE)
    if kind == "phash":
        value, flipped = phash_pair(img)
        return value, flipped if mirror else value
    value = _to_uint(fn(img))
    return value, _to_uint(fn(ImageOps.mirror(img))) if mirror else value


def _hash_or_reason(path: str, kind: str, mirror: bool) -> tuple[int, int] | str:
    try:
        return hash_file(path, kind, mirror=mirror)
    except Exception as exc:  # noqa: BLE001 - a file that changed since the manifest is skipped, not fatal
        return unreadable_reason(exc)


def hash_files(
    paths: list[Path], kind: str = "phash", *, mirror: bool = True, workers: int = 2,
    progress: Callable[[int, int], None] | None = None,
) -> list[tuple[int, int] | str]:
    """Hash of each file (or why it failed), on ``workers`` processes: decoding is CPU-bound and holds the GIL."""
    hash_function(kind)
    job = partial(_hash_or_reason, kind=kind, mirror=mirror)
    names = [str(p) for p in paths]
    results: list[tuple[int, int] | str] = []
    if workers > 1 and len(names) >= POOL_MIN_FILES:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for result in pool.map(job, names, chunksize=max(1, min(64, len(names) // (workers * 8)))):
                results.append(result)
                if progress:
                    progress(len(results), len(names))
    else:
        for name in names:
            results.append(job(name))
            if progress:
                progress(len(results), len(names))
    return results
