"""Dataset pipeline benchmark: import + dedup + prepare on real posters, hashing speed, dedup quality, pair search.

Run ``make bench`` (or ``python benchmarks/data_bench.py --posters ../shared/datasets/posters``). The posters are
read in place; everything written goes to a temporary folder that is removed at the end. Figures go to stdout as
Markdown, for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

from tuning.data.dedup import (
    CROP_SIMILARITY,
    CROP_THRESHOLD,
    DEFAULT_THRESHOLDS,
    check_crops,
    components,
    crop_candidates,
    dedup,
    duplicate_pairs,
)
from tuning.data.hashing import HASH_KINDS, crop_similarity, grey_thumbnail, hash_file, hash_file_windows, hash_files
from tuning.data.importer import import_folder
from tuning.data.manifest import read_manifest
from tuning.data.prepare import load_prepared, prepare
from tuning.data.splits import assign_splits

EDITS = ("resize 50%", "jpeg q40", "crop 5%", "brighten 1.3", "watermark", "mirror")
#: Cropped copies: (left, top, right, bottom) fractions cut off. "crop N%" keeps the convention of "crop 5%" above
#: (N% of the width and of the height in all, half from each side).
CROPS = {
    "crop 6%": (0.03, 0.03, 0.03, 0.03), "crop 8%": (0.04, 0.04, 0.04, 0.04), "crop 10%": (0.05, 0.05, 0.05, 0.05),
    "crop 10% each side": (0.1, 0.1, 0.1, 0.1), "crop 10% left": (0.1, 0, 0, 0), "crop 10% top": (0, 0.1, 0, 0),
    "crop 10% right": (0, 0, 0.1, 0), "crop 10% bottom": (0, 0, 0, 0.1), "crop 10% left+top": (0.1, 0.1, 0, 0),
    "crop 10% right+bottom": (0, 0, 0.1, 0.1), "crop off-centre": (0.07, 0.02, 0, 0.05),
}
ALL_EDITS = (*EDITS, *CROPS)
REPO = Path(__file__).resolve().parent.parent


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
    if edit in CROPS:
        left, top, right, bottom = CROPS[edit]
        return img.crop((round(left * w), round(top * h), w - round(right * w), h - round(bottom * h)))
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


def _unique_posters(files: list[Path]) -> list[Path]:
    by_sha: dict[str, Path] = {}
    for f in files:
        by_sha.setdefault(hashlib.sha256(f.read_bytes()).hexdigest(), f)
    return sorted(by_sha.values())


def _halves(files: list[Path], seed: int) -> tuple[list[Path], list[Path]]:
    """The distinct posters cut at random into a calibration half and a held-out half (the figures' half)."""
    unique = _unique_posters(files)
    order = np.random.default_rng(seed).permutation(len(unique))
    half = len(unique) // 2
    return sorted(unique[i] for i in order[:half]), sorted(unique[i] for i in order[half:])


def _nearset(pool: list[Path], root: Path, seed: int) -> tuple[list[Path], np.ndarray, list[str]]:
    """200 posters of ``pool``: 100 with every edit of ``ALL_EDITS``, 100 unrelated; (files, source id, edit)."""
    rng = np.random.default_rng(seed)
    picked = [pool[i] for i in rng.choice(len(pool), 200, replace=False)]
    items: list[tuple[Path, int, str]] = []
    for i, f in enumerate(picked):
        cls = root / "raw" / ("edited" if i < 100 else "plain")
        cls.mkdir(parents=True, exist_ok=True)
        with Image.open(f) as img:
            img = img.convert("RGB")
        dst = cls / f"{i:03d}.jpg"
        img.save(dst, quality=90)
        items.append((dst, i, "original"))
        if i < 100:
            for e, edit in enumerate(ALL_EDITS):
                path = cls / f"{i:03d}-{e:02d}.{'png' if edit == 'crop 5%' else 'jpg'}"
                options = {"quality": 40} if edit == "jpeg q40" else {"quality": 90} if edit in CROPS else {}
                _edit(img, edit).save(path, **options)
                items.append((path, i, edit))
    return [p for p, _, _ in items], np.array([s for _, s, _ in items]), [e for _, _, e in items]


def _pair_codes(pairs: np.ndarray, n: int) -> set[int]:
    return set((np.minimum(pairs[:, 0], pairs[:, 1]) * n + np.maximum(pairs[:, 0], pairs[:, 1])).tolist())


def _fmt(score: float | None) -> str:
    return "-" if score is None else f"{score:.3f}"


def calibrate(pool: list[Path], tmp: Path, seed: int) -> list[str]:
    """Window-hash K and cross-correlation threshold, measured on the calibration half only."""
    paths, source, edits = _nearset(pool, tmp / "calibration", seed)
    hashed = [hash_file_windows(p) for p in paths]
    h = np.array([a for a, _, _ in hashed], dtype=np.uint64)
    windows = np.stack([w for _, _, w in hashed])
    origin = {int(s): i for i, (s, e) in enumerate(zip(source, edits)) if e == "original"}
    crops = [i for i, e in enumerate(edits) if e in CROPS]
    true_codes = {min(i, origin[source[i]]) * len(paths) + max(i, origin[source[i]]) for i in crops}
    real = [hash_file_windows(p) for p in pool]  # the whole calibration half: every pair among them is false
    rh = np.array([a for a, _, _ in real], dtype=np.uint64)
    rw = np.stack([w for _, _, w in real])
    thumbs: dict[Path, np.ndarray] = {}

    def score(a: Path, b: Path) -> float:
        for p in (a, b):
            if p not in thumbs:
                thumbs[p] = grey_thumbnail(p)
        return max(crop_similarity(thumbs[a], thumbs[b]), crop_similarity(thumbs[b], thumbs[a]))

    lines = ["#### Calibration half: window-hash K and cross-correlation threshold", "",
             f"{len(pool)} distinct posters; 100 of them with the {len(CROPS)} crop edits "
             f"({len(crops)} cropped copies). A crop is a candidate at K when its hash is within K bits of a window "
             "hash of its original or the other way round; every candidate pair among the real posters of this "
             "half is false.", "",
             "| K | cropped copies that are candidates with their original | false candidate pairs among the "
             f"{len(pool)} posters | highest score of a false candidate | lowest score of a true candidate |",
             "| ---: | ---: | ---: | ---: | ---: |"]
    for k in (6, 7, 8, 9, 10):
        cand = crop_candidates(h, windows, threshold=k)
        got = _pair_codes(cand, len(paths)) & true_codes
        true_pairs = [(int(a), int(b)) for a, b in cand.tolist()
                      if min(a, b) * len(paths) + max(a, b) in true_codes]
        false = crop_candidates(rh, rw, threshold=k)
        false_scores = [score(pool[a], pool[b]) for a, b in false.tolist()]
        true_scores = [score(paths[a], paths[b]) for a, b in true_pairs]
        mark = " (default)" if k == CROP_THRESHOLD else ""
        lines.append(f"| {k}{mark} | {len(got)}/{len(true_codes)} | {len(false)} | "
                     f"{_fmt(max(false_scores, default=None))} | {_fmt(min(true_scores, default=None))} |")
    lines += ["", f"Defaults taken from this half: K = {CROP_THRESHOLD} for window hashes, cross-correlation "
              f">= {CROP_SIMILARITY} to join."]
    return lines


def quality(files: list[Path], tmp: Path, seed: int) -> list[str]:
    """Held-out half: 100 sources with every edit, 100 unrelated; precision and recall per K and per edit."""
    calibration, held = _halves(files, seed)
    lines = ["## Near-duplicate precision and recall", ""]
    lines += calibrate(calibration, tmp, seed) + [""]
    paths, source, edits = _nearset(held, tmp / "nearset", seed + 1)
    root = tmp / "nearset"
    truth = source[:, None] == source[None, :]
    iu = np.triu_indices(len(paths), 1)
    lines += ["#### Held-out half: every hash, full-image rule only", "",
              f"200 posters of the held-out half: 100 with {len(ALL_EDITS)} edited copies each "
              f"({', '.join(ALL_EDITS)}), 100 unrelated; {len(paths)} images, {int(truth[iu].sum())} true duplicate "
              "pairs. A pair counts as found when both images end up in one group (groups are transitive). "
              "Crops are saved as JPEG quality 90, except crop 5% (PNG, as before). `crop N%` cuts N% of the "
              "width and height in all, half from each side; `each side 10%` keeps the middle 80%; off-centre "
              "cuts 7% left, 2% top, 0 right, 5% bottom.", "",
              "| hash | K | precision | recall | groups |",
              "| --- | ---: | ---: | ---: | ---: |"]
    for kind in HASH_KINDS:
        hashes = [hash_file(p, kind) for p in paths]
        h = np.array([a for a, _ in hashes], dtype=np.uint64)
        hf = np.array([b for _, b in hashes], dtype=np.uint64)
        default = DEFAULT_THRESHOLDS[kind]
        for k in sorted({max(0, default - 2), max(0, default - 1), default, default + 1, default + 2, default + 4}):
            comp = components(len(paths), duplicate_pairs(h, hf, threshold=k))
            same = (comp[:, None] == comp[None, :])[iu]
            tp = int((same & truth[iu]).sum())
            mark = " (default)" if k == default else ""
            lines.append(f"| {kind} | {k}{mark} | {tp / max(int(same.sum()), 1):.3f} | "
                         f"{tp / int(truth[iu].sum()):.3f} | {len(np.unique(comp))} |")
    # direct (pairwise) matches of the old rule and of the new one
    hashed = [hash_file_windows(p) for p in paths]
    h = np.array([a for a, _, _ in hashed], dtype=np.uint64)
    hf = np.array([b for _, b, _ in hashed], dtype=np.uint64)
    windows = np.stack([w for _, _, w in hashed])
    old_pairs = duplicate_pairs(h, hf, threshold=DEFAULT_THRESHOLDS["phash"])
    crop_pairs, _ = check_crops(crop_candidates(h, windows), paths)
    direct = {"old": _pair_codes(old_pairs, len(paths)),
              "new": _pair_codes(np.concatenate([old_pairs, crop_pairs]), len(paths))}
    origin = {int(s): i for i, (s, e) in enumerate(zip(source, edits)) if e == "original"}
    rel = [p.relative_to(root).as_posix() for p in paths]
    rows: dict[str, dict[str, float]] = {}
    summary = {}
    for rule, crops in (("old", False), ("new", True)):
        found = dedup(root, crops=crops)
        group = {r["path"]: r["group"] for r in read_manifest(root)}
        g = np.array([group[r] for r in rel])
        same = (g[:, None] == g[None, :])[iu]
        tp = int((same & truth[iu]).sum())
        originals = [origin[s] for s in range(200)]
        false = sum(g[originals[s]] == g[originals[t]] for s in range(200) for t in range(s + 1, 200))
        summary[rule] = (tp / max(int(same.sum()), 1), tp / int(truth[iu].sum()), false, found)
        for edit in ALL_EDITS:
            mine = [i for i, e in enumerate(edits) if e == edit]
            n = len(paths)
            rows.setdefault(edit, {})[f"{rule} pairwise"] = np.mean(
                [min(i, origin[source[i]]) * n + max(i, origin[source[i]]) in direct[rule] for i in mine])
            rows[edit][f"{rule} group"] = np.mean([g[i] == g[origin[source[i]]] for i in mine])
    new = summary["new"][3]
    lines += ["", "#### Held-out half: `tuning data dedup`, without and with the crop check", "",
              f"Before = `--no-crops` (the full-image rule alone: phash K={new.threshold}, mirror "
              f"{new.mirror_threshold}); now = the defaults (plus window hashes within {CROP_THRESHOLD} bits, "
              f"joined at cross-correlation >= {CROP_SIMILARITY}: {new.crop_joined} of {new.crop_checked} "
              "candidate pairs joined). Pairwise = the copy is matched directly with its original; in group = "
              "it ends up in its original's group.", "",
              "| edit | pairwise before | in group before | pairwise now | in group now |",
              "| --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {e} | {r['old pairwise']:.0%} | {r['old group']:.0%} | {r['new pairwise']:.0%} | "
              f"{r['new group']:.0%} |" for e, r in rows.items()]
    lines += [""] + [f"- {label}: precision {p:.3f}, recall {r:.3f} over all pairs; different source posters "
                     f"wrongly joined: {f} of {200 * 199 // 2} pairs"
                     for label, (p, r, f, _) in (("before", summary["old"]), ("now", summary["new"]))]
    return lines


def _dedup_seconds(code: Path, folder: Path, crops: bool) -> tuple[float, float, int, int, int]:
    """One cold `dedup` (hash cache removed) by the code in ``code``, in its own process: wall seconds, CPU seconds
    of that process and its pool (startup and imports included), pairs wrongly joined among the folder's distinct
    posters, crop candidates checked and joined. CPU time is the steadier figure on a shared machine."""
    shutil.rmtree(folder / "cache", ignore_errors=True)
    script = ("import json, sys; from pathlib import Path; from tuning.data.dedup import dedup; "
              "kw = {} if sys.argv[2] == 'old' else {'crops': sys.argv[2] == 'on'}; "
              "r = dedup(Path(sys.argv[1]), **kw); "
              "print(json.dumps([r.seconds, sum(len(g.duplicates) * (len(g.duplicates) + 1) // 2 for g in r.groups), "
              "getattr(r, 'crop_checked', 0), getattr(r, 'crop_joined', 0)]))")
    mode = "old" if code != REPO else ("on" if crops else "off")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run([sys.executable, "-c", script, str(folder), mode], cwd=code, check=True,
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(code)})
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    seconds, false, checked, joined = json.loads(out.stdout.splitlines()[-1])
    return seconds, cpu, false, checked, joined


def dedup_speed(posters: Path, tmp: Path, baseline: Path | None, repeats: int = 5) -> list[str]:
    """`dedup` on all the posters: the code before (``--baseline``, a checkout) against this one, interleaved."""
    folder = tmp / "all-posters"
    import_folder(posters, folder)
    runs = {"now, defaults (crops)": (REPO, True), "now, --no-crops": (REPO, False)}
    if baseline is not None:
        runs = {"before (baseline checkout)": (baseline, False), **runs}
    best: dict[str, tuple[float, float, int, int, int]] = {}
    cpu: dict[str, float] = {}
    load = os.getloadavg()[0]
    for _ in range(repeats):
        for name, (code, crops) in runs.items():
            result = _dedup_seconds(code, folder, crops)
            cpu[name] = min(cpu.get(name, float("inf")), result[1])
            if name not in best or result[0] < best[name][0]:
                best[name] = result
    n = len(_unique_posters(sorted(posters.rglob("*.jpg"))))
    lines = ["#### All the posters: wrong joins and speed", "",
             f"`dedup` over all {n} distinct posters (imported to a temporary folder; every pair joined among them "
             f"is false), cold (hash cache removed), each in its own process, best of {repeats} interleaved; "
             f"load average {load:.1f} on {os.cpu_count()} CPUs when it started.", "",
             "| code | seconds (`dedup`'s own figure) | CPU seconds, whole process | pairs wrongly joined | "
             "crop candidates checked | joined |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {name} | {s:.2f} | {cpu[name]:.2f} | {f} | {c} | {j} |" for name, (s, _, f, c, j) in best.items()]
    if baseline is not None:
        now, before = "now, defaults (crops)", "before (baseline checkout)"
        lines += ["", f"Now / before: {best[now][0] / best[before][0]:.2f}x wall, "
                      f"{cpu[now] / cpu[before]:.2f}x CPU (best of {repeats} each)."]
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
    parser.add_argument("--baseline", type=Path, default=None,
                        help="A checkout of the code before (e.g. `git worktree add`), to time its dedup beside this "
                             "one's on all the posters.")
    parser.add_argument("--only", nargs="*", choices=["pipeline", "hashing", "resize", "quality", "dedup-speed",
                                                      "pairs"], help="Run only these parts [all].")
    args = parser.parse_args()
    files = sorted(p for p in args.posters.rglob("*.jpg"))
    if not files:
        raise SystemExit(f"{args.posters}: no posters found; pass --posters DIR")
    parts = {"pipeline": lambda tmp: pipeline(args.posters, tmp), "hashing": lambda tmp: hashing_speed(files[::3]),
             "resize": lambda tmp: resize_cost(files[::9]),
             "quality": lambda tmp: quality(files, tmp, args.seed),
             "dedup-speed": lambda tmp: dedup_speed(args.posters, tmp, args.baseline),
             "pairs": lambda tmp: pair_search(args.seed)}
    out: list[str] = [f"Command: `python benchmarks/data_bench.py --posters {args.posters.as_posix()}`", ""]
    with tempfile.TemporaryDirectory(prefix="data-bench-") as tmp:
        for name in args.only or list(parts):
            out += parts[name](Path(tmp)) + [""]
    print("\n".join(out))

if __name__ == "__main__":
    main()
