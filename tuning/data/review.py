"""Review a dataset by eye: HTML contact sheets to tick bad images, and the ticked list applied to the manifest.

The pages are self-contained (thumbnails embedded as base64 JPEG, no server, they work from file://) so they can be
opened from a shared drive or mailed to whoever knows the classes. The only thing that flows back is a plain
``rejects.txt`` of manifest paths, saved by the page itself; ``apply_rejects`` turns it into ``rejected`` statuses.
Nothing is deleted, so a review can always be audited and undone in manifest.csv.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import re
import shlex
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from PIL import Image

from tuning import _io
from tuning.data.images import load_small_rgb, unreadable_reason
from tuning.data.manifest import build_manifest, raw_dir, status_kind, write_manifest
from tuning.errors import DataError

Progress = Callable[[int, int], None]
#: Long side of the embedded thumbnails: big enough to judge an image, small enough for thousands per page.
THUMB_SIZE = 128
REJECTS_NAME = "rejects.txt"


@dataclass(frozen=True)
class ClassSheet:
    """One class page and what it shows; ``images`` counts the tick boxes of the class's own images."""

    label: str
    page: Path
    images: int
    duplicate_groups: int
    unreadable: int
    rejected: int


@dataclass(frozen=True)
class ReviewReport:
    """The pages written; ``thumbnail_errors`` are readable-by-status rows whose file could not be drawn now."""

    dataset: Path
    index: Path
    sheets: list[ClassSheet]
    built_manifest: bool
    thumbnail_errors: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class ApplyReport:
    """What applying a rejects list did; ``unchanged`` rows were already excluded (rejected or unreadable)."""

    manifest: Path
    marked: list[str]
    unchanged: list[str]
    not_found: list[str]
    ambiguous: dict[str, list[str]]


def _rows(dataset: Path) -> tuple[list[dict[str, str]], bool]:
    """The manifest rows after a rescan of raw/ (new or changed files described), and whether it was new.

    Never the stale file as it is: a review of an image replaced since, or a rejects list applied to rows of
    files long gone, would show or mark the wrong picture.
    """
    raw_dir(dataset)
    built = not (dataset / "manifest.csv").exists()
    return build_manifest(dataset), built


def _unreadable(row: dict[str, str]) -> bool:
    return status_kind(row["status"]) == "unreadable"


# ----- contact sheets ------------------------------------------------------------------------------------
def _thumbnail(path: Path, size: int) -> tuple[str, int, int]:
    """A ``data:`` URI of a small JPEG; JPEGs decode at reduced scale first, which is what makes thousands fast.

    Decoded through ``images.load_small_rgb``, the guarded open every step uses: a 13k x 13k PNG is refused as
    a decompression bomb from its header instead of being decoded in full (Pillow itself only warns there).
    """
    rgb = load_small_rgb(path, size)
    rgb.thumbnail((size, size), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    rgb.save(buf, "JPEG", quality=70, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii"), rgb.width, rgb.height


def _page_names(labels: list[str], index_name: str) -> dict[str, str]:
    """A safe, unique file name per class; a class folder may hold any character, a file name should not."""
    names: dict[str, str] = {}
    taken = {index_name.lower()}
    for label in labels:
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("._") or "class"
        name, n = f"{stem}.html", 1
        while name.lower() in taken:
            n += 1
            name = f"{stem}-{n}.html"
        taken.add(name.lower())
        names[label] = name
    return names


def _out_paths(dataset: Path, out: Path | None) -> Path:
    """The index file: ``out`` itself when it names an .html file, else ``out/index.html``."""
    if out is None:
        return dataset / "review" / "index.html"
    out = Path(out)
    if out.suffix.lower() in (".html", ".htm"):
        if out.is_dir():
            raise DataError(f"{out}: is a folder; give a folder for the pages or an .html file for the index")
        return out
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder; give a folder for the pages or an .html file")
    return out / "index.html"


def write_review(
    dataset: Path, *, out: Path | None = None, thumb_size: int = THUMB_SIZE, progress: Progress | None = None
) -> ReviewReport:
    """Write one contact sheet per class plus an index linking them; thumbnails are made from the raw files."""
    dataset = Path(dataset)
    if thumb_size < 16:
        raise DataError(f"thumbnail size must be >= 16 px, got {thumb_size}")
    index = _out_paths(dataset, out)
    rows, built = _rows(dataset)
    labels = sorted({r["label"] for r in rows})
    if not labels:
        raise DataError(f"{dataset}: the manifest lists no images; put them in {dataset}/raw/<class>/")
    members: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        members.setdefault(row["group"] or row["path"], []).append(row)
    todo = [r["path"] for r in rows if not _unreadable(r)]
    thumbs: dict[str, tuple[str, int, int] | str] = {}
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for i, (rel, thumb) in enumerate(zip(todo, pool.map(lambda r: _safe_thumbnail(dataset / r, thumb_size), todo)),
                                         start=1):
            thumbs[rel] = thumb
            if progress:
                progress(i, len(todo))
    names = _page_names(labels, index.name)
    sheets = []
    for label in labels:
        page = index.parent / names[label]
        own = [r for r in rows if r["label"] == label]
        groups = [sorted(m, key=lambda r: r["path"]) for key, m in sorted(members.items())
                  if len(m) > 1 and any(r["label"] == label for r in m)]
        _io.write_text(page, _class_page(dataset, label, own, groups, thumbs, index.name, thumb_size))
        sheets.append(ClassSheet(
            label, page, images=sum(not _unreadable(r) for r in own), duplicate_groups=len(groups),
            unreadable=sum(_unreadable(r) for r in own), rejected=sum(r["status"] == "rejected" for r in own),
        ))
    _io.write_text(index, _index_page(dataset, sheets, len(rows)))
    errors = [(rel, t) for rel, t in thumbs.items() if isinstance(t, str)]
    return ReviewReport(dataset, index, sheets, built, errors)


def _safe_thumbnail(path: Path, size: int) -> tuple[str, int, int] | str:
    """The thumbnail, or why it could not be made (the file changed since the manifest was written)."""
    try:
        return _thumbnail(path, size)
    except FileNotFoundError:
        return "file missing"
    except Exception as exc:  # noqa: BLE001 - one bad file must not stop a review of thousands
        return unreadable_reason(exc) or "unreadable"


_STYLE = """
body { font: 13px/1.35 system-ui, sans-serif; margin: 0 1rem 2rem; color: #222; }
header { position: sticky; top: 0; background: #fff; padding: .6rem 0; border-bottom: 1px solid #ddd; z-index: 1;
         display: flex; gap: 1rem; align-items: center; flex-wrap: wrap; }
header h1 { font-size: 1.2rem; margin: 0; }
button { font: inherit; padding: .3rem .8rem; cursor: pointer; }
#save { font-weight: bold; }
.hint { color: #666; }
code { background: #f3f3f3; padding: 0 .2rem; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(%(cell)dpx, 1fr)); gap: .5rem; }
.group { display: flex; gap: .5rem; flex-wrap: wrap; padding: .4rem; margin: .4rem 0; border: 1px solid #e0c060;
         background: #fffbea; }
figure { margin: 0; padding: .3rem; border: 2px solid transparent; border-radius: 4px; width: %(cell)dpx;
         box-sizing: border-box; }
.grid figure { width: auto; }
figure label { display: block; cursor: pointer; }
.box { height: %(size)dpx; display: flex; align-items: center; justify-content: center; background: #f4f4f4; }
.box img { max-width: 100%%; max-height: 100%%; }
.missing { color: #a00; font-size: 11px; padding: .3rem; text-align: center; }
figcaption { overflow-wrap: anywhere; font-size: 11px; }
.status { display: block; color: #666; }
figure.ticked { border-color: #c00; background: #fee; }
figure.rejected { opacity: .45; }
figure.duplicate .status { color: #a60; }
table { border-collapse: collapse; } td, th { border-bottom: 1px solid #eee; padding: .2rem .6rem; text-align: left; }
"""

_SCRIPT = """
(function () {
  "use strict";
  var HEADER = %(header)s;
  var FILE_NAME = %(file_name)s;
  function ticked() { return document.querySelectorAll("input.reject:checked:not(:disabled)"); }
  function update() { document.getElementById("count").textContent = ticked().length + " ticked"; }
  document.addEventListener("change", function (event) {
    var box = event.target;
    if (!box.classList || !box.classList.contains("reject")) return;
    box.closest("figure").classList.toggle("ticked", box.checked);
    update();
  });
  document.getElementById("clear").addEventListener("click", function () {
    ticked().forEach(function (box) { box.checked = false; box.closest("figure").classList.remove("ticked"); });
    update();
  });
  document.getElementById("save").addEventListener("click", function () {
    var seen = {}, lines = [];
    ticked().forEach(function (box) {
      var path = box.getAttribute("data-path");
      if (!seen[path]) { seen[path] = true; lines.push(path); }
    });
    var text = HEADER + lines.map(function (p) { return p + "\\n"; }).join("");
    var url = URL.createObjectURL(new Blob([text], {type: "text/plain;charset=utf-8"}));
    var link = document.createElement("a");
    link.href = url;
    link.download = FILE_NAME;
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(function () { URL.revokeObjectURL(url); }, 60000);
    document.getElementById("saved").textContent = "saved " + lines.length + " name(s) to " + FILE_NAME;
  });
  update();
})();
"""


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def _script_literal(value: str) -> str:
    """A JS string literal that cannot end the surrounding <script> element early."""
    return json.dumps(value).replace("</", "<\\/")


def _figure(row: dict[str, str], thumbs: dict[str, tuple[str, int, int] | str], label: str) -> str:
    status = row["status"]
    kind = status_kind(status)
    kind = kind if kind in ("rejected", "duplicate") else "ok"
    thumb = thumbs.get(row["path"], "no thumbnail")
    if isinstance(thumb, str):
        picture = f'<span class="missing">{_esc(thumb)}</span>'
    else:
        uri, width, height = thumb
        picture = f'<img loading="lazy" decoding="async" width="{width}" height="{height}" alt="" src="{uri}">'
    other = "" if row["label"] == label else f' <em>(class {_esc(row["label"])})</em>'
    # A rejected row stays rejected (un-rejecting is an edit of manifest.csv), so its box is shown but fixed.
    fixed = ' checked disabled title="already rejected"' if kind == "rejected" else ""
    return (
        f'<figure class="{kind}" title="{_esc(row["path"])}"><label><span class="box">{picture}</span>'
        f'<figcaption><input type="checkbox" class="reject" data-path="{_esc(row["path"])}"{fixed}> '
        f'{_esc(Path(row["path"]).name)}{other}<span class="status">{_esc(status)}</span></figcaption>'
        f"</label></figure>"
    )


def _class_page(
    dataset: Path, label: str, own: list[dict[str, str]], groups: list[list[dict[str, str]]],
    thumbs: dict[str, tuple[str, int, int] | str], index_name: str, thumb_size: int,
) -> str:
    grouped = {r["path"] for g in groups for r in g}
    singles = [r for r in own if not _unreadable(r) and r["path"] not in grouped]
    broken = [r for r in own if _unreadable(r)]
    apply = f"tuning data review {shlex.quote(str(dataset))} --apply {REJECTS_NAME}"
    parts = [
        "<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Review {_esc(label)} - {_esc(dataset.name)}</title>",
        f"<style>{_STYLE % {'size': thumb_size, 'cell': thumb_size + 16}}</style></head><body>",
        f'<header><h1>{_esc(label)}</h1><a href="{quote(index_name)}">all classes</a>'
        f'<span id="count">0 ticked</span><button type="button" id="save">Save rejects</button>'
        f'<button type="button" id="clear">Clear ticks</button><span id="saved" class="hint"></span></header>',
        f'<p class="hint">Tick the images to exclude (click an image or its box), press <b>Save rejects</b>, then run '
        f"<code>{_esc(apply)}</code>. Nothing is deleted: the manifest marks them <code>rejected</code>.</p>",
    ]
    if groups:
        parts.append(f'<section id="duplicates"><h2>Duplicate groups ({len(groups)})</h2>'
                     '<p class="hint">Copies of one image, side by side; tick the ones to drop.</p>')
        for group in groups:
            shown = [r for r in group if not _unreadable(r)]
            parts.append('<div class="group">' + "".join(_figure(r, thumbs, label) for r in shown) + "</div>")
        parts.append("</section>")
    parts.append(f'<section id="images"><h2>Images ({len(singles)})</h2><div class="grid">')
    parts.extend(_figure(r, thumbs, label) for r in singles)
    parts.append("</div></section>")
    if broken:
        parts.append(f'<section id="unreadable"><h2>Unreadable ({len(broken)})</h2>'
                     "<table><tr><th>file</th><th>reason</th></tr>")
        parts.extend(f'<tr><td>{_esc(r["path"])}</td><td>{_esc(r["status"].partition(":")[2] or r["status"])}</td></tr>'
                     for r in broken)
        parts.append("</table></section>")
    header = f"# rejects from the review of class {label} in {dataset.name}; apply with: {apply}\n"
    script = _SCRIPT % {"header": _script_literal(header), "file_name": _script_literal(REJECTS_NAME)}
    parts.append(f"<script>{script}</script></body></html>\n")
    return "\n".join(parts)


def _index_page(dataset: Path, sheets: list[ClassSheet], total: int) -> str:
    rows = "".join(
        f'<tr><td><a href="{quote(s.page.name)}">{_esc(s.label)}</a></td><td>{s.images}</td>'
        f"<td>{s.duplicate_groups}</td><td>{s.unreadable}</td><td>{s.rejected}</td></tr>"
        for s in sheets
    )
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>Review {_esc(dataset.name)}</title><style>{_STYLE % {'size': 0, 'cell': 0}}</style></head><body>"
        f"<h1>Review of {_esc(str(dataset))}</h1><p>{total} file(s) in the manifest.</p>"
        "<table><tr><th>class</th><th>images</th><th>duplicate groups</th><th>unreadable</th><th>rejected</th></tr>"
        f"{rows}</table><p class=\"hint\">On each class page tick the images to exclude and press <b>Save rejects</b>;"
        f" then run <code>tuning data review {_esc(shlex.quote(str(dataset)))} --apply {REJECTS_NAME}</code>.</p>"
        "</body></html>\n"
    )


# ----- applying the ticked list --------------------------------------------------------------------------
def read_rejects(path: Path) -> list[str]:
    """The names in a rejects file, in order and without repeats; blank lines and ``#`` comments are skipped."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{path}: no such rejects file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, not a rejects file") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text file; expected one manifest path or file name per line") from None
    names = (line.strip() for line in text.splitlines())
    return list(dict.fromkeys(n for n in names if n and not n.startswith("#")))


def match_names(paths: list[str], names: list[str]) -> tuple[dict[str, str], list[str], dict[str, list[str]]]:
    """Each name to its one manifest path: exact, or a unique path-suffix (``x.jpg``, ``Action/x.jpg``).

    A name matching several files is ambiguous and one matching none unknown; both are returned, never guessed,
    because rejecting the wrong image silently is worse than asking for a longer name.
    """
    exact = set(paths)
    by_name: dict[str, list[str]] = {}
    for p in paths:
        by_name.setdefault(p.rsplit("/", 1)[-1], []).append(p)
    found: dict[str, str] = {}
    unknown: list[str] = []
    ambiguous: dict[str, list[str]] = {}
    for name in names:
        key = name.replace("\\", "/").removeprefix("./")
        if key in exact:
            found[name] = key
            continue
        # Shorter than a manifest path (a file name, class/name) or longer (an absolute path to the raw file).
        hits = [p for p in by_name.get(key.rsplit("/", 1)[-1], []) if p.endswith("/" + key) or key.endswith("/" + p)]
        if len(hits) == 1:
            found[name] = hits[0]
        elif hits:
            ambiguous[name] = sorted(hits)
        else:
            unknown.append(name)
    return found, unknown, ambiguous


def apply_rejects(dataset: Path, *rejects: Path) -> ApplyReport:
    """Mark every image named in the rejects files ``rejected``; already excluded rows are left as they are.

    Unreadable rows keep their ``unreadable:<reason>`` (it says more than ``rejected``). The manifest is written
    (atomically) only when something changed, so applying the same list twice changes nothing.
    """
    dataset = Path(dataset)
    if not rejects:
        raise DataError("no rejects file given")
    names = list(dict.fromkeys(n for path in rejects for n in read_rejects(path)))
    rows, _ = _rows(dataset)
    found, unknown, ambiguous = match_names([r["path"] for r in rows], names)
    targets = set(found.values())
    marked, unchanged = [], []
    for row in rows:
        if row["path"] not in targets:
            continue
        if row["status"] == "rejected" or _unreadable(row):
            unchanged.append(row["path"])
        else:
            row["status"] = "rejected"
            marked.append(row["path"])
    if marked:
        write_manifest(dataset, rows)
    return ApplyReport(dataset / "manifest.csv", marked, unchanged, unknown, ambiguous)
