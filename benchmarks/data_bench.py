"""Dataset pipeline benchmark: import + dedup + prepare on real posters, hashing speed, dedup quality, pair search.

Run ``make bench`` (or ``python benchmarks/data_bench.py --posters ../shared/datasets/posters``). The posters are
read in place; everything written goes to a temporary folder that is removed at the end. Figures go to stdout as
Markdown, for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

from tuning.data.dedup import DEFAULT_THRESHOLDS, MIRROR_MARGIN, components, dedup, duplicate_pairs
from tuning.data.hashing import HASH_KINDS, hash_file, hash_files
from tuning.data.importer import import_folder
from tuning.data.manifest import read_manifest
from tuning.data.prepare import load_prepared, prepare
from tuning.data.splits import assign_splits

EDITS = ("resize 50%", "jpeg q40", "crop 5%", "brighten 1.3", "watermark", "mirror")


def _edit(img: Image.Image, edit: str) -> Image.Image:
    w, h = img.size
    if edit == "resize 50%":
        return img.resize((w // 2, h // 2), Image.Resampling.LANCZOS)
    if edit == "jpeg q40":
        return img  # the quality is applied when saving
    if edit == "crop 5%":
        dx, dy = int(w * 0.05), int(h * 0.05)
        return img.crop((dx // 2, dy // 2, w - (dx - dx // 2), h - (dy - dy // 2)))
    if edit == "brighten 1.3":
        return ImageEnhance.Brightness(img).enhance(1.3)
    if edit == "watermark":
        out = img.copy()
        draw = ImageDraw.Draw(out)
        draw.text((w * 0.05, h * 0.85), "© SAMPLE watermark", fill=(255, 255, 255), font_size=max(10, w // 14))
        return out
    if edit == "mirror":
        return ImageOps.mirror(img)
    raise ValueError(edit)


def pipeline(posters: Path, tmp: Path) -> list[str]:
    out = tmp / "posters"
    t0 = time.perf_counter()
    imported = import_folder(posters, out)
    t1 = time.perf_counter()
    found = dedup(out)
    t2 = time.perf_counter()
    report = prepare(out, size=96, seed=0)
    t3 = time.perf_counter()
    data = load_prepared(out, 96)
    codes = assign_splits(data.y, data.groups, "70/15/15", seed=0)
    straddle = sum(len(set(codes[data.groups == g].tolist())) > 1 for g in np.unique(data.groups))
    rows = read_manifest(out)
    multi = Counter(r["group"] for r in rows)
    lines = [
        "## Import + dedup + prepare on the posters",
        "",
        f"- images: {sum(imported.copied.values())} copied "
        f"({', '.join(f'{k} {v}' for k, v in imported.copied.items())})",
        f"- import (copy + manifest): {t1 - t0:.1f} s; dedup (phash, threshold {found.threshold}, "
        f"mirror {found.mirror_threshold}): "
        f"{t2 - t1:.1f} s; prepare 96 px: {t3 - t2:.1f} s; total {t3 - t0:.1f} s",
        f"- dedup: {found.exact_groups} byte-identical group(s)"
        + "".join(f"; {g.kept} = {', '.join(g.duplicates)}" for g in found.groups if g.exact)
        + f", {found.near_groups} near-duplicate group(s), {found.duplicates} image(s) marked duplicate-of",
        f"- prepare: kept {report.kept} of usable {report.available}; cache {data.x.shape} {data.x.dtype}",
        f"- groups with more than one manifest row: {sum(n > 1 for n in multi.values())}; "
        f"groups that straddle train/val/test in the 70/15/15 split: {straddle}",
    ]
    for g in found.groups:
        if not g.exact:
            lines.append(f"  - near group: keep {g.kept}: {', '.join(g.duplicates)} ({', '.join(g.labels)})")
    return lines


def best_times(methods: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Best wall time of each method over ``repeats`` rounds, the methods interleaved (the host is shared)."""
    best = dict.fromkeys(methods, float("inf"))
    for _ in range(repeats):
        for name, fn in methods.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def hashing_speed(files: list[Path], repeats: int = 3) -> list[str]:
    """Plain loop vs ``hash_files`` on the same files, interleaved, best of ``repeats`` (the host is shared)."""
    def plain() -> None:
        for f in files:
            with Image.open(f) as img:
                imagehash.phash(img)

    methods = {"plain": plain, "one": lambda: hash_files(files, "phash", mirror=True, workers=1),
               "two": lambda: hash_files(files, "phash", mirror=True, workers=2)}
    load = os.getloadavg()[0]
    best = best_times(methods, repeats)
    n = len(files)
    return [
        "## Hashing throughput (phash, same files, one run)",
        "",
        f"{n} posters, best of {repeats} interleaved repeats; load average {load:.1f} on {os.cpu_count()} CPUs "
        "when it started.",
        "",
        "| method | images/s | seconds |",
        "| --- | ---: | ---: |",
        f"| plain loop: `Image.open` + `imagehash.phash` | {n / best['plain']:.0f} | {best['plain']:.2f} |",
        f"| `hash_files`, 1 process (draft decode, hash + mirror hash) | {n / best['one']:.0f} | {best['one']:.2f} |",
        f"| `hash_files`, 2 processes (as `tuning data dedup`) | {n / best['two']:.0f} | {best['two']:.2f} |",
        "",
        f"Speed-up over the plain loop: {best['plain'] / best['two']:.1f}x with 2 processes "
        f"({best['plain'] / best['one']:.1f}x with one), while also hashing each mirror image.",
    ]


def resize_cost(files: list[Path], repeats: int = 3) -> list[str]:
    """The dataset's resize (full decode + ``ResizeRGB``, the op exported models run) against Pillow's
    draft-decode + bilinear resize it replaced, on the same posters, interleaved, best of ``repeats``."""
    from tuning.data.images import load_rgb, open_image, to_rgb

    def pillow() -> None:
        for f in files:
            with open_image(f) as img:
                img.draft("RGB", (192, 192))
                to_rgb(img).resize((96, 96), Image.Resampling.BILINEAR)

    def ours() -> None:
        for f in files:
            load_rgb(f, 96)

    ours()  # the first call builds the layer and loads TensorFlow
    best = best_times({"pillow": pillow, "ours": ours}, repeats)
    n = len(files)
    return [
        "## Resize cost at 96 px (one thread, same files, one run)",
        "",
        f"{n} posters, best of {repeats} interleaved repeats.",
        "",
        "| method | images/s |",
        "| --- | ---: |",
        f"| Pillow: JPEG draft decode + `resize(BILINEAR)` (before) | {n / best['pillow']:.0f} |",
        f"| `load_rgb`: full decode + `tuning.resize.ResizeRGB` (now; the exported models' own resize) | "
        f"{n / best['ours']:.0f} |",
        "",
        f"Ratio: the shared resize takes {best['ours'] / best['pillow']:.1f}x Pillow's time; `tuning data prepare` "
        "runs it once per image and caches the result.",
    ]


def quality(files: list[Path], tmp: Path, seed: int) -> list[str]:
    """~200 posters: 100 sources with 6 edits each, 100 unrelated; pairwise precision and recall per K."""
    rng = np.random.default_rng(seed)
    by_sha: dict[str, Path] = {}
    for f in files:
        by_sha.setdefault(hashlib.sha256(f.read_bytes()).hexdigest(), f)
    unique = sorted(by_sha.values())
    picked = [unique[i] for i in rng.choice(len(unique), 200, replace=False)]
    root = tmp / "nearset"
    items: list[tuple[Path, int, str]] = []  # file, source id, edit
    for i, f in enumerate(picked):
        cls = root / "raw" / ("edited" if i < 100 else "plain")
        cls.mkdir(parents=True, exist_ok=True)
        with Image.open(f) as img:
            img = img.convert("RGB")
        dst = cls / f"{i:03d}.jpg"
        img.save(dst, quality=90)
        items.append((dst, i, "original"))
        if i < 100:
            for e, edit in enumerate(EDITS):
                path = cls / f"{i:03d}-{e}.{'png' if edit == 'crop 5%' else 'jpg'}"
                _edit(img, edit).save(path, **({"quality": 40} if edit == "jpeg q40" else {}))
                items.append((path, i, edit))
    source = np.array([s for _, s, _ in items])
    edits = [e for _, _, e in items]
    truth = source[:, None] == source[None, :]
    iu = np.triu_indices(len(items), 1)
    lines = ["## Near-duplicate precision and recall",
             "",
             f"{len(picked)} real posters: 100 with 6 edited copies each ({', '.join(EDITS)}), 100 unrelated; "
             f"{len(items)} images, {int(truth[iu].sum())} true duplicate pairs. A pair counts as found when both "
             "images end up in one group (groups are transitive).",
             "",
             "| hash | K | precision | recall | groups |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for kind in HASH_KINDS:
        hashes = [hash_file(p, kind) for p, _, _ in items]
        h = np.array([a for a, _ in hashes], dtype=np.uint64)
        hf = np.array([b for _, b in hashes], dtype=np.uint64)
        default = DEFAULT_THRESHOLDS[kind]
        for k in sorted({max(0, default - 2), max(0, default - 1), default, default + 1, default + 2, default + 4}):
            comp = components(len(items), duplicate_pairs(h, hf, threshold=k))
            same = (comp[:, None] == comp[None, :])[iu]
            tp = int((same & truth[iu]).sum())
            precision = tp / max(int(same.sum()), 1)
            recall = tp / int(truth[iu].sum())
            mark = " (default)" if k == default else ""
            lines.append(f"| {kind} | {k}{mark} | {precision:.3f} | {recall:.3f} | "
                         f"{len(np.unique(comp[source >= 0]))} |")
        if kind == "phash":
            d = np.bitwise_count(h[:, None] ^ h[None, :])
            m = np.minimum(np.bitwise_count(h[:, None] ^ hf[None, :]), np.bitwise_count(hf[:, None] ^ h[None, :]))
            rule = (d <= default) | (m <= max(0, default - MIRROR_MARGIN))
            origin = {s: i for i, (s, e) in enumerate(zip(source, edits)) if e == "original"}
            per_edit = {edit: np.mean([rule[i, origin[s]] for i, (s, e) in enumerate(zip(source, edits)) if e == edit])
                        for edit in EDITS}
            worst = {edit: int(max(min(d[i, origin[s]], m[i, origin[s]] if edit == "mirror" else 64)
                                   for i, (s, e) in enumerate(zip(source, edits)) if e == edit)) for edit in EDITS}
    found = dedup(root)  # the real command at its defaults
    group = {r["path"]: r["group"] for r in read_manifest(root)}
    rel = [p.relative_to(root).as_posix() for p, _, _ in items]
    orig = {s: group[r] for r, s, e in zip(rel, source, edits) if e == "original"}
    grouped = {edit: np.mean([group[r] == orig[s] for r, s, e in zip(rel, source, edits) if e == edit])
               for edit in EDITS}
    false = sum(group[orig[s]] == group[orig[t]] for s in range(200) for t in range(s + 1, 200))
    lines += ["",
              f"`tuning data dedup` at its defaults (phash, K={found.threshold}, mirror matches within "
              f"{found.mirror_threshold}): {found.near_groups} near-duplicate groups; different source posters "
              f"wrongly joined: {false} of {200 * 199 // 2} pairs.", "",
              "| edit | edited copy within K of its original (pairwise) | in its original's group (transitive) "
              "| largest distance seen |", "| --- | ---: | ---: | ---: |"]
    lines += [f"| {e} | {per_edit[e]:.0%} | {grouped[e]:.0%} | {worst[e]}"
              f"{' (to the mirror hash)' if e == 'mirror' else ''} |" for e in EDITS]
    return lines


def pair_search(seed: int, k: int = 10) -> list[str]:
    rng = np.random.default_rng(seed)
    lines = ["## Pair search (multi-index hashing over uint64, numpy)", "",
             f"Random 64-bit hashes with 500 planted pairs at 1..{k} differing bits; threshold K={k}.", "",
             "| hashes | mirror hashes too | seconds | planted pairs found | pairs found |",
             "| ---: | --- | ---: | ---: | ---: |"]
    for n in (10_000, 100_000):
        h = rng.integers(0, 2**64, n, dtype=np.uint64, endpoint=False)
        perm = rng.permutation(n)
        a, b = perm[:500], perm[500:1000]
        for x, y in zip(a, b):
            flips = rng.choice(64, rng.integers(1, k + 1), replace=False)
            h[y] = h[x] ^ np.uint64(sum(1 << int(f) for f in flips))
        planted = {(min(x, y), max(x, y)) for x, y in zip(a.tolist(), b.tolist())}
        for mirror in (False, True):
            hf = rng.integers(0, 2**64, n, dtype=np.uint64) if mirror else None
            t0 = time.perf_counter()
            pairs = duplicate_pairs(h, hf, threshold=k)
            dt = time.perf_counter() - t0
            got = {tuple(p) for p in pairs.tolist()}
            lines.append(f"| {n:,} | {'yes' if mirror else 'no'} | {dt:.2f} | {len(planted & got)}/500 | {len(got)} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posters", type=Path, default=Path("../shared/datasets/posters"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", choices=["pipeline", "hashing", "resize", "quality", "pairs"],
                        help="Run only these parts [all].")
    args = parser.parse_args()
    files = sorted(p for p in args.posters.rglob("*.jpg"))
    if not files:
        raise SystemExit(f"{args.posters}: no posters found; pass --posters DIR")
    parts = {"pipeline": lambda tmp: pipeline(args.posters, tmp), "hashing": lambda tmp: hashing_speed(files[::3]),
             "resize": lambda tmp: resize_cost(files[::9]),
             "quality": lambda tmp: quality(files, tmp, args.seed), "pairs": lambda tmp: pair_search(args.seed)}
    out: list[str] = [f"Command: `python benchmarks/data_bench.py --posters {args.posters.as_posix()}`", ""]
    with tempfile.TemporaryDirectory(prefix="data-bench-") as tmp:
        for name in args.only or list(parts):
            out += parts[name](Path(tmp)) + [""]
    print("\n".join(out))

if __name__ == "__main__":
    main()
