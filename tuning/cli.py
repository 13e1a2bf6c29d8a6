"""The ``tuning`` command: the only module that prints or knows about click.

Library errors (``ToolkitError``) become one-line ``Error: ...`` messages with exit code 1 here, and nowhere
else.
"""

from __future__ import annotations

import functools
import io
import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import click

from tuning import runtime
from tuning.errors import ToolkitError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ start-up chatter hides real output


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn library errors into click's one-line ``Error:`` and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ToolkitError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper


def _start_keras_quietly() -> None:
    """Import TensorFlow with its start-up notices hidden when Keras will run on it (its default backend).

    Under ``KERAS_BACKEND=jax`` or ``torch`` nothing is imported here; where TensorFlow is not installed and no
    backend is named, an installed one is chosen (``runtime.auto_backend``). The formats that need no
    TensorFlow (.keras, .onnx) then export and predict without it.
    """
    if "KERAS_BACKEND" not in os.environ and not runtime.installed("tensorflow"):
        runtime.use_backend(runtime.auto_backend(""))  # a machine without TensorFlow: an installed backend
    if os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow":
        return
    try:
        runtime.load_tensorflow()
    except ImportError:
        pass  # Keras names what is missing when it loads


def study_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--study", "study", required=True, metavar="NAME|DIR",
                        help="Study name (runs/NAME) or folder.")(fn)


def weights_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--weights", "weights", default=None, metavar="imagenet|none|PATH",
        help="A pretrained backbone's starting weights: imagenet (Keras downloads its file on first use into "
             "$KERAS_HOME/models, ~/.keras/models), none (train from scratch) or the path of that file fetched "
             "by hand [the space's]; recorded in config.toml.")(fn)


def group_by_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--group-by", "group_by", default=None, metavar="RULE",
        help="Source groups a split keeps together: folder (the first sub-folder below each class: a show, a "
             "person), regex:PATTERN (on the path below the class folder; its first group or the match names "
             "the group), csv:FILE (columns path,group) or none (clear).")(fn)


class ProgressBar:
    """``\r  prepare 1200/2777 images 310/s`` on stderr while a long step runs, and its final count once.

    The live line is redrawn (at most every ``interval`` seconds) only when stderr is a terminal: a log file or
    a pipe gets no carriage-return spam, just the final line, so ``2>log`` still records how much was done and
    how fast. stdout keeps only the step's results, so ``--json`` and ``| jq`` are unaffected.
    """

    def __init__(self, label: str, unit: str = "images", *, stream: Any = None, interval: float = 0.1) -> None:
        self.label, self.unit, self.interval = label, unit, interval
        self.stream: Any = stream if stream is not None else sys.stderr
        self.tty = bool(self.stream.isatty())
        self.start = time.perf_counter()
        self.shown = -math.inf
        self.i = self.n = 0
        self.extra = ""
        self.finished = False

    def line(self) -> str:
        rate = self.i / max(time.perf_counter() - self.start, 1e-9)
        return f"  {self.label} {self.i}/{self.n} {self.unit} {rate:.0f}/s{self.extra}"

    def __call__(self, i: int, n: int, extra: str = "") -> None:
        self.i, self.n, self.extra = i, n, extra
        now = time.perf_counter()
        if self.tty and (now - self.shown >= self.interval or i >= n):
            self.shown = now
            click.echo("\r" + self.line() + "\033[K", nl=False, file=self.stream)

    def done(self) -> None:
        """The final count line (once; nothing when the step never reported, e.g. it had nothing to do)."""
        if self.finished or not self.n:
            return
        self.finished = True
        click.echo(("\r" if self.tty else "") + self.line() + ("\033[K" if self.tty else ""), file=self.stream)


class StageBars:
    """One ``ProgressBar`` per named stage of a step (dedup's describe then hash), each finished as the next
    one starts."""

    def __init__(self, names: Mapping[str, str], unit: str = "images") -> None:
        self.names, self.unit = names, unit
        self.bars: dict[str, ProgressBar] = {}

    def __call__(self, stage: str, i: int, n: int) -> None:
        if stage not in self.bars:
            for bar in self.bars.values():
                bar.done()
            self.bars[stage] = ProgressBar(self.names.get(stage, stage), self.unit)
        self.bars[stage](i, n)

    def done(self) -> None:
        for bar in self.bars.values():
            bar.done()


EXIT_CODES = """\b
Exit codes:
  0  success
  1  error: one line 'Error: ...' says what is wrong and what to do
  2  usage error: an unknown command or option, or a bad option value

\b
Shell completion (bash; zsh_source and fish_source likewise):
  eval "$(_TUNING_COMPLETE=bash_source tuning)"
"""


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_CODES)
@click.version_option(package_name="tuning")
def cli() -> None:
    """Search CNN hyperparameters on a few thousand images, retrain the best, test it and ship it."""


# ----- data ----------------------------------------------------------------------------------------------
@cli.group()
def data() -> None:
    """Make and prepare datasets (datasets/<name>/raw/<class>/...)."""


@data.command("demo")
@click.option("--out", type=click.Path(path_type=Path), default=Path("datasets/demo"), show_default=True)
@click.option("--per-class", type=int, default=300, show_default=True)
@click.option("--size", type=int, default=128, show_default=True, help="Short side of the images in pixels.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--groups", is_flag=True,
              help="Families of related images (OUT/raw/<Class>/<class>_family_NNN/), like frames of one show; "
                   "then 'tuning data prepare OUT --group-by folder' keeps each family on one side of a split.")
@click.option("--family-size", type=click.IntRange(min=1), default=10, show_default=True,
              help="Images per family with --groups.")
@handle_errors
def data_demo(out: Path, per_class: int, size: int, seed: int, groups: bool, family_size: int) -> None:
    """Generate the built-in three-class demo set (Action, Romance, Anime) under OUT/raw/."""
    from tuning.data.demo import make_demo

    start = time.perf_counter()
    result = make_demo(out / "raw", per_class=per_class, size=size, seed=seed,
                       family_size=family_size if groups else 0)
    counts = ", ".join(f"{k} {v}" for k, v in result.counts.items())
    click.echo(f"Wrote {sum(result.counts.values())} images ({counts}) to {result.out} "
               f"in {time.perf_counter() - start:.1f}s")
    if groups:
        click.echo(f"In families of {family_size}; group them with: tuning data prepare {out} --group-by folder")


@data.command("prepare")
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option("--size", type=int, default=96, show_default=True)
@click.option("--per-class", type=int, default=None, help="Images per class after balancing [smallest class].")
@click.option("--balance", type=click.Choice(["undersample", "weights"]), default=None,
              help="weights: keep every image, store class weights (the default: it tested better on the posters, "
                   "docs/recipes.md); undersample: drop images down to the smallest class (the default with "
                   "--per-class).")
@click.option("--seed", type=int, default=0, show_default=True)
@group_by_option
@click.option("--split", "preview_split", default="70/15/15", show_default=True, metavar="TRAIN/VAL/TEST",
              help="Split to preview: groups per side and how far the class shares drift from it.")
@handle_errors
def data_prepare(dataset: Path, size: int, per_class: int | None, balance: str | None, seed: int,
                 group_by: str | None, preview_split: str) -> None:
    """Write DATASET/manifest.csv and the balanced cache DATASET/cache/<size>px.npz."""
    from tuning.data.groups import parse_group_by
    from tuning.data.prepare import check_size, prepare
    from tuning.data.splits import split_shares

    check_size(size)  # before TensorFlow's seconds of start-up
    if group_by is not None:
        parse_group_by(group_by)
    split_shares(preview_split)
    _start_keras_quietly()

    describe, resize = ProgressBar("describe"), ProgressBar(f"prepare {size}px")

    def resizing(i: int, n: int) -> None:
        describe.done()  # the manifest is described before any image is resized
        resize(i, n)

    report = prepare(dataset, size=size, seed=seed, per_class=per_class, balance=balance, group_by=group_by,
                     preview_split=preview_split, progress=describe, resize_progress=resizing)
    describe.done()
    resize.done()
    _grouping_lines(report.grouping)
    click.echo(f"Prepared {sum(report.kept.values())} images at {size} px -> {report.cache}")
    for name, n in report.available.items():
        weight = f"  class weight {report.class_weights[name]:.3f}" if report.balance == "weights" else ""
        click.echo(f"  {name:<16} {report.kept[name]:>6} kept of {n} usable{weight}")
    for warning in report.warnings:
        click.echo(f"Warning: {warning}")
    click.echo(f"  skipped {len(report.skipped)} file(s)")
    for reason, n in _reason_counts(report.skipped):
        click.echo(f"    {reason:<48} {n:>6}")
    for path, reason in report.skipped:
        click.echo(f"    {path}: {reason}")
    if report.split_error:
        click.echo(f"Warning: split {report.preview_split} cannot be made: {report.split_error}")
    elif report.split is not None:
        sp = report.split
        by = ("source groups merged with near duplicates" if sp["grouped_by"] == "source" else
              "near-duplicate groups only (no --group-by: one show or person may sit on both sides)")
        g = sp["groups"]
        click.echo(f"Split {report.preview_split} preview (seed 0), kept together: {by}")
        click.echo(f"  groups: train {g['train']}, val {g['val']}, test {g['test']}; largest class-share drift "
                   f"{100 * sp['split_max_drift']:.1f} points")
        for name, d in sp["split_drift"].items():
            click.echo(f"  {name:<16} " + "  ".join(f"{k} {100 * v:+.1f}" for k, v in d.items()))


def _grouping_lines(grouping: Any) -> None:
    """What --group-by did: files and groups, and every file it left ungrouped counted by reason."""
    if grouping is None:
        return
    click.echo(f"Grouped by {grouping.spec}: {grouping.grouped} file(s) in {grouping.groups} group(s)")
    for reason, n in grouping.reasons().most_common():
        click.echo(f"  not grouped: {reason:<56} {n:>6}")
    for path in grouping.unknown[:10]:
        click.echo(f"    csv names no file of the dataset: {path}")
    if len(grouping.unknown) > 10:
        click.echo(f"    ... {len(grouping.unknown) - 10} more")


def _reason_counts(skipped: list[tuple[str, str]]) -> list[tuple[str, int]]:
    """Skipped files per reason, most frequent first; ``duplicate-of:x`` and ``unreadable:why`` by their kind
    and reason, so a thousand duplicates read as one line."""
    from collections import Counter

    def kind(status: str) -> str:
        return "duplicate" if status.startswith("duplicate-of:") else status

    return Counter(kind(reason) for _, reason in skipped).most_common()


@data.command("import")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Dataset folder (copies go to OUT/raw/).")
@group_by_option
@handle_errors
def data_import(source: Path, out: Path, group_by: str | None) -> None:
    """Copy SOURCE/<class>/** (nested folders kept) into OUT/raw/<class>/ and build OUT/manifest.csv."""
    from tuning.data.importer import import_folder

    bar = ProgressBar("import", "files")
    result = import_folder(source, out, group_by=group_by, progress=bar)
    bar.done()
    click.echo(f"Imported {sum(result.copied.values())} new image(s) into {out / 'raw'} in {result.seconds:.1f}s "
               f"({sum(result.present.values())} already there)")
    for label, n in result.copied.items():
        click.echo(f"  {label:<16} {n:>6} copied {result.present[label]:>6} already there")
    for label in result.empty_classes:
        click.echo(f"  class folder '{label}' has no image file")
    if result.renamed:
        click.echo(f"Renamed {len(result.renamed)} file(s) whose name was not valid UTF-8:")
        for old, new in result.renamed:
            click.echo(f"  {old} -> {new}")
    click.echo(f"Skipped {len(result.skipped)} file(s)")
    for reason, n in result.reasons().most_common():
        click.echo(f"  {reason:<48} {n:>6}")
    for rel, there in result.conflicts:
        click.echo(f"  not copied: {rel} (a different file is already at {there}; rename one of them)")
    if result.unreadable:
        click.echo(f"Unreadable images (kept, marked in the manifest): {len(result.unreadable)}")
    _grouping_lines(result.grouping)
    click.echo(f"Manifest: {out / 'manifest.csv'}")


@data.command("dedup")
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option("--hash", "kind", type=click.Choice(["phash", "dhash", "ahash", "whash", "colorhash"]),
              default="phash", show_default=True, help="Perceptual hash that compares images.")
@click.option("--threshold", type=int, default=None,
              help="Max differing hash bits for near duplicates [phash 10, dhash 10, ahash 5, whash 5, colorhash 0].")
@click.option("--no-mirror", is_flag=True, help="Do not count mirrored copies as duplicates.")
@click.option("--no-crops", is_flag=True, help="Do not look for cropped copies (phash window hashes).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary with every group as JSON.")
@handle_errors
def data_dedup(dataset: Path, kind: str, threshold: int | None, no_mirror: bool, no_crops: bool,
               as_json: bool) -> None:
    """Group byte-identical and near-duplicate images in DATASET/manifest.csv; one per group is kept."""
    from tuning.data.dedup import dedup

    bars = StageBars({"describe": "describe", "hash": "dedup hash", "crops": "crop check"})
    result = dedup(dataset, kind=kind, threshold=threshold, mirror=not no_mirror, crops=not no_crops,
                   progress=None if as_json else bars)
    bars.done()
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
        return
    mirrored = f"mirrored copies within {result.mirror_threshold}" if result.mirror else "mirrored copies not compared"
    crops = (f"crops: {result.crop_joined} of {result.crop_checked} candidate pair(s) joined" if result.crops
             else "crops not compared")
    click.echo(f"Compared {result.images} images by {result.hash} (threshold {result.threshold}, {mirrored}, "
               f"{crops}) in {result.seconds:.1f}s")
    click.echo(f"  {result.exact_groups} byte-identical group(s), {result.near_groups} near-duplicate group(s); "
               f"{result.duplicates} image(s) marked duplicate-of")
    for g in result.groups[:20]:
        mixed = f"  (classes differ: {', '.join(g.labels)})" if len(g.labels) > 1 else ""
        click.echo(f"  {'exact' if g.exact else 'near '} keep {g.kept}: {', '.join(g.duplicates)}{mixed}")
    if len(result.groups) > 20:
        click.echo(f"  ... {len(result.groups) - 20} more (--json lists all)")
    for path, reason in result.unhashable:
        click.echo(f"  could not hash {path}: {reason}")
    click.echo(f"Manifest: {result.dataset / 'manifest.csv'}")


@data.command("stats")
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@handle_errors
def data_stats(dataset: Path, as_json: bool) -> None:
    """Counts per class and status, image sizes, and why files are skipped (from DATASET/manifest.csv)."""
    from tuning.data.stats import dataset_stats

    st = dataset_stats(dataset)
    if as_json:
        click.echo(json.dumps(st.to_dict(), indent=2, ensure_ascii=False))
        return
    click.echo(f"{st.dataset}: {st.files} files, {st.duplicate_groups} duplicate group(s)")
    click.echo("Groups: " + ("source groups (--group-by) merged with near duplicates" if st.source_grouped else
                             "near duplicates only (no --group-by: one show or person may sit on both sides)"))
    click.echo(f"  {'class':<16} {'files':>6} {'usable':>6} {'groups':>6} {'largest group':>13}")
    for label, c in st.per_class.items():
        click.echo(f"  {label:<16} {c['files']:>6} {c['ok']:>6} {c['groups']:>6} "
                   f"{100 * c['largest_group_share']:>12.1f}%")
    click.echo("Status: " + ", ".join(f"{k} {v}" for k, v in st.per_status.items()))
    if st.sizes:
        (w0, w1, w2), (h0, h1, h2) = st.sizes.width, st.sizes.height
        click.echo(f"Size (min/median/max): width {w0}/{w1}/{w2}, height {h0}/{h1}/{h2} px")
    click.echo(f"Skipped {sum(st.reasons.values())} file(s)")
    for reason, n in st.reasons.items():
        click.echo(f"  {reason:<48} {n:>6}")


@data.command("collect")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Dataset folder (images go to OUT/raw/).")
@click.option("--query", "queries", multiple=True, required=True, metavar="CLASS=TEXT",
              help="A search for one class; repeat it (several per class are mixed).")
@click.option("--per-class", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--provider", default="openverse", show_default=True, metavar="NAME",
              help="Search API: openverse, wikimedia, or bing (needs --endpoint and BING_SEARCH_KEY).")
@click.option("--endpoint", default=None, help="API base URL [openverse and wikimedia: the public one].")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=60.0, show_default=True,
              help="Seconds one search or download may take in all, retries and slow servers included.")
@click.option("--workers", type=click.IntRange(1, 16), default=4, show_default=True, help="Parallel downloads.")
@click.option("--max-bytes", type=click.IntRange(min=1), default=20_000_000, show_default=True,
              help="Skip images larger than this.")
@handle_errors
def data_collect(out: Path, queries: tuple[str, ...], per_class: int, provider: str, endpoint: str | None,
                 timeout: float, workers: int, max_bytes: int) -> None:
    """Download images for each --query CLASS=TEXT into OUT/raw/CLASS/, recording sources in OUT/manifest.csv."""
    from tuning.data.collect import collect, get_provider

    spec = get_provider(provider)  # an unknown name is an error listing the known ones
    bars: dict[str, ProgressBar] = {}
    skipped_before: dict[str, int] = {}  # the run's skips counted when each class began (p.skipped is the run's)

    def show(p: Any) -> None:
        if p.label not in bars:
            for bar in bars.values():
                bar.done()
            bars[p.label] = ProgressBar(f"collect {p.label}")
            skipped_before[p.label] = p.skipped
        bars[p.label](p.saved, p.target, f", {p.skipped - skipped_before[p.label]} skipped")

    result = collect(out, list(queries), per_class=per_class, provider=provider, endpoint=endpoint,
                     api_key=os.environ.get(spec.key_env) if spec.key_env else None, timeout=timeout,
                     workers=workers, max_bytes=max_bytes, progress=show)
    for bar in bars.values():
        bar.done()
    click.echo(f"Collected {sum(result.new.values())} new images from {provider} "
               f"into {out / 'raw'} in {result.seconds:.1f}s")
    for label, n in result.saved.items():
        short = result.shortfall[label]
        click.echo(f"  {label:<16} {n:>6}/{per_class}" + (f"  ({short} short: the results ran out)" if short else ""))
    click.echo(f"Skipped {len(result.skipped)} image(s)")
    for reason, n in result.reasons().most_common():
        click.echo(f"  {reason:<28} {n:>6}")
    for query, reason in result.search_errors:
        click.echo(f"Search '{query}' stopped early: {reason}")
    click.echo(f"Manifest: {result.manifest}")


@data.command("review")
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None, metavar="FILE_OR_DIR",
              help="Folder for the pages, or the index .html file [DATASET/review/].")
@click.option("--apply", "rejects", type=click.Path(path_type=Path), multiple=True, metavar="REJECTS",
              help="Mark the paths or file names listed in a saved rejects.txt 'rejected' (repeatable).")
@handle_errors
def data_review(dataset: Path, out: Path | None, rejects: tuple[Path, ...]) -> None:
    """Write HTML contact sheets to tick bad images (DATASET/review/), or --apply the saved rejects.txt."""
    from tuning.data.review import apply_rejects, write_review

    if rejects:
        if out is not None:
            raise click.UsageError("--out and --apply cannot be used together")
        done = apply_rejects(dataset, *rejects)
        click.echo(f"Marked {len(done.marked)} image(s) rejected in {done.manifest}"
                   f"{f' ({len(done.unchanged)} already excluded)' if done.unchanged else ''}")
        for name in done.not_found:
            click.echo(f"  not found: {name}")
        for name, hits in done.ambiguous.items():
            click.echo(f"  ambiguous, not marked: {name} (matches {', '.join(hits)})")
        return
    start, bar = time.perf_counter(), ProgressBar("thumbnails")
    review = write_review(dataset, out=out, progress=bar)
    bar.done()
    click.echo(("Built manifest.csv; w" if review.built_manifest else "W") + f"rote {len(review.sheets)} class "
               f"page(s) in {time.perf_counter() - start:.1f}s -> {review.index}")
    for s in review.sheets:
        click.echo(f"  {s.label:<16} {s.images:>6} images {s.duplicate_groups:>4} duplicate groups "
                   f"{s.unreadable:>4} unreadable {s.rejected:>4} rejected  {s.page.name}")
    for path, reason in review.thumbnail_errors:
        click.echo(f"  no thumbnail: {path}: {reason}")
    click.echo(f"Tick images, press 'Save rejects', then: tuning data review {dataset} --apply rejects.txt")


# ----- search --------------------------------------------------------------------------------------------
def _shown_path(path: str) -> str:
    """A path as the user would type it here: relative when it lies under the working directory."""
    rel = os.path.relpath(path)
    return path if rel.startswith(os.pardir) else rel


#: How the per-trial line names each objective.
SHORT_OBJECTIVES = {"val_accuracy": "val_acc", "val_loss": "val_loss", "val_balanced_accuracy": "bal_acc",
                    "val_macro_f1": "macro_f1"}


def _progress_printer() -> Callable[[Mapping[str, Any]], None]:
    """Live lines: one per epoch on a terminal (overwritten), one per finished trial always."""
    from tuning.trials import better

    state: dict[str, Any] = {"best": None, "done": 0, "seconds": 0.0, "params": {}, "objective": "val_accuracy"}
    tty = sys.stdout.isatty()

    def show(event: Mapping[str, Any]) -> None:
        kind = event["event"]
        if kind == "study":
            config = event["config"]
            state["total"] = config.trials
            state["objective"] = config.objective
            click.echo(f"Study {event['folder']}: {config.model} on {_shown_path(config.dataset)}, engine "
                       f"{config.engine}/{config.sampler}, budget {config.budget}, {config.trials} trials x "
                       f"{config.epochs} epochs")
            split = event["space"].base["split"]
            if config.cv > 1:
                click.echo(f"Scored by {config.cv}-fold cross-validation over train+val (the mean of {config.cv} "
                           f"trainings); the test images of split {split} stay untouched")
            elif event["space"].scored_val_fraction() is not None:
                click.echo("Every split scheme is scored on the same validation images (the share all of them have)")
            click.echo(f"Objective: {config.objective}" + (f" ({event['objective_note']})"
                                                            if event.get("objective_note") else ""))
            if config.objectives:
                click.echo(f"Costs: {', '.join(config.objectives[1:])}, measured once per complete trial; "
                           "pruning is off (Optuna does not prune multi-objective studies)")
            state["searched"] = event["space"].search
            click.echo(f"Searching: {', '.join(state['searched']) or '(nothing: base values only)'}")
        elif kind == "trial_start":
            state["params"] = event["params"]
            state["started"] = time.perf_counter()
        elif kind == "epoch" and tty:
            logs = event["logs"]
            click.echo(f"\r  trial {event['number']:>3} epoch {event['epoch']}/{event['epochs']} "
                       f"val_acc {logs.get('val_accuracy', math.nan):.3f} loss {logs.get('loss', math.nan):.3f}",
                       nl=False)
        elif kind == "trial_end":
            state["done"] += 1
            state["seconds"] += event["seconds"]
            value = event["value"]
            if event["status"] == "complete" and better(value, state["best"], state["objective"]):
                state["best"] = value
            eta = state["seconds"] / state["done"] * max(0, state.get("total", 0) - state["done"])
            shown = ", ".join(f"{k}={_short(v)}" for k, v in state["params"].items() if k in state["searched"])
            best = f"{state['best']:.3f}" if state["best"] is not None else "  -  "  # none complete yet
            short = SHORT_OBJECTIVES.get(state["objective"], state["objective"])
            costs = "".join(f" {k} {v:.3g}" for k, v in (event.get("costs") or {}).items())  # --objectives
            click.echo(("\r" if tty else "") + f"  trial {event['number']:>3} {event['status']:<8} "
                       f"{short} {value:.3f}{costs} best {best} {event['seconds']:5.1f}s ETA {eta:4.0f}s  "
                       f"{shown}" + (f"  ({event['reason']})" if event["reason"] else ""))
        elif kind == "note":  # an engine explains why the study holds fewer or other trials than asked
            click.echo(event["message"])
        elif kind == "retrain":
            click.echo("Retraining the best configuration on the training split, then one test evaluation...")

    return show


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _headline_notes(metrics: Mapping[str, Any]) -> None:
    """Group-disjointness and the trivial baseline, right under the test-accuracy line."""
    from tuning.metrics import headline_notes

    for line in headline_notes(metrics):
        click.echo(f"  {line}")


def _summary(outcome: Any) -> None:
    from tuning.pipeline import describe_reduced
    from tuning.trials import describe_counts, describe_pruned

    m = outcome.metrics
    low, high = m["accuracy_ci95"]
    counts = describe_counts(outcome.counts)
    minutes, seconds = divmod(int(outcome.seconds), 60)
    click.echo("")
    click.echo(f"== Study {outcome.folder} ({minutes}m{seconds:02d}s)")
    if outcome.reduced:
        click.echo(f"Reduced CPU budget '{outcome.config.budget}': {describe_reduced(outcome.reduced)} "
                   f"(the study's own settings: --budget full)")
    click.echo(f"Trials: {counts}")
    if outcome.config.objectives:
        click.echo(f"Pareto front: {len(outcome.front)} trial(s) ({', '.join(f'#{n}' for n in outcome.front)}) over "
                   f"{', '.join(outcome.config.objectives)}; pruning was off (multi-objective). The best by "
                   "quality is retrained; 'tuning retrain --pick' chooses another (see the report's front)")
    if outcome.pruned_at:
        click.echo(describe_pruned(outcome.pruned_at, sum(outcome.counts.values()), outcome.config.epochs))
    objective = outcome.config.objective.replace("val_", "validation ").replace("_", " ")
    costs = "".join(f", {k} {v:.3g}" for k, v in outcome.best_costs.items())
    click.echo(f"Best trial #{outcome.best_number}: {objective} {outcome.best_value:.3f}{costs}")
    for key, value in outcome.best_params.items():
        click.echo(f"  {key:<14} {_short(value)}")
    click.echo(f"Test accuracy {m['accuracy']:.3f} (95% CI {low:.3f}-{high:.3f}, n={m['n']}), "
               f"balanced accuracy {m['balanced_accuracy']:.3f}")
    _headline_notes(m)
    classes = m["classes"]
    width = max(8, *(len(c) + 1 for c in classes))
    click.echo("Confusion matrix (rows: true, columns: predicted)")
    click.echo(" " * width + "".join(f"{c:>{width}}" for c in classes))
    for name, row in zip(classes, m["confusion_matrix"]):
        click.echo(f"{name:<{width}}" + "".join(f"{v:>{width}}" for v in row))
    click.echo(f"Report: {outcome.report}")
    click.echo(f"Model:  {outcome.model}")


@cli.command()
@click.option("--model", required=True, help="Registered model name (see 'tuning models list').")
@click.option("--data", "data_dir", type=click.Path(path_type=Path), default=Path("datasets/demo"),
              show_default=True, help="Dataset folder with raw/<class>/ images.")
@click.option("--space", default=None, help="Search-space TOML file [the model's built-in one].")
@click.option("--engine", default="optuna", show_default=True, help="optuna, kerastuner or staged (the study's "
              "one-factor-at-a-time procedure).")
@click.option("--sampler", default="auto", show_default=True,
              help="optuna: tpe (auto), gp, cmaes, nsga2, random, grid; kerastuner: bayesian (auto), random, "
                   "hyperband.")
@click.option("--pruner", default="median", show_default=True, help="median, hyperband, sha or none (optuna).")
@click.option("--objective", default="auto", show_default=True,
              help="What trials are ranked by on the validation split: balanced_accuracy (mean per-class recall), "
                   "macro_f1, val_accuracy or val_loss; auto: balanced_accuracy when the dataset is prepared with "
                   "class weights (unequal classes), val_accuracy otherwise (a resumed study keeps its own).")
@click.option("--objectives", default=None, metavar="QUALITY,COST[,COST]",
              help="Search several objectives at once (optuna engine, sampler tpe or nsga2): the quality objective "
                   "first (as --objective), then the model's costs, size_mb (parameters x 4 bytes) and/or "
                   "latency_ms (TFLite or ONNX, batch 1, this CPU), e.g. balanced_accuracy,size_mb. The report "
                   "draws the Pareto front; no pruning; a resumed study keeps its own.")
@click.option("--cv", type=click.IntRange(min=1), default=1, show_default=True,
              help="Score each configuration by K-fold cross-validation over train+val (stratified, groups kept "
                   "whole): the mean of K trainings; pruning watches fold 1. The test split is untouched.")
@click.option("--repeats", type=int, default=1, show_default=True,
              help="Train each configuration with this many seeds; the objective is their mean.")
@click.option("--workers", type=int, default=1, show_default=True, help="Local worker processes (optuna engine).")
@click.option("--trials-per-process", type=click.IntRange(min=0), default=20, show_default=True,
              help="Train in child processes replaced after this many trials, which keeps memory flat "
                   "(TensorFlow keeps ~25 MB per model); 0 trains in this process.")
@click.option("--max-failures", type=click.IntRange(min=0), default=0,
              help="Stop after this many trials of this run failed (optuna and kerastuner engines); failures "
                   "of earlier runs do not count, so a rerun after fixing the cause trains again "
                   "[0: max(3, trials)].")
@click.option("--budget", default="auto", show_default=True,
              help="quick, full (the study's settings) or auto: full on a GPU, quick otherwise.")
@click.option("--preset", default=None, metavar="NAME",
              help="Start from the space's [presets.NAME] (e.g. modern: the modern training recipe).")
@click.option("--trials", type=click.IntRange(min=1), default=None, help="Finished trials in the study [budget's].")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Epochs per trial [budget's].")
@click.option("--params", default=None, help="Comma-separated parameters to search [the space's search list].")
@click.option("--split", default=None, metavar="TRAIN/VAL/TEST",
              help="The split every trial is scored with, e.g. 80/10/10 [the space's base]; optimisers never "
                   "search it (only --engine staged replays the study's split stage).")
@click.option("--study", default=None, help="Study name (runs/NAME) [MODEL-DATA-BUDGET].")
@click.option("--storage", default=None, help="Optuna storage URL [a journal file in the study folder].")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--precision", default="auto", show_default=True,
              help="auto (mixed_bfloat16 on a CPU with bf16 units, else float32; a resumed study keeps its own), "
                   "float32, mixed_bfloat16 or mixed_float16. Exported models compute in float32.")
@click.option("--backend", default=None, metavar="auto|tensorflow|jax|torch",
              help="Keras backend to train on [KERAS_BACKEND, else auto: the package's measured choice for this "
                   "device and model]; a resumed study keeps its own.")
@click.option("--tensorboard", is_flag=True,
              help="Write TensorBoard scalars and HParams to runs/<study>/tensorboard/ (needs tuning[tensorboard]).")
@click.option("--track", "track", multiple=True, metavar="mlflow[:URI]",
              help="Also log to MLflow: the study as a parent run, each trial as a child [URI: "
                   "sqlite:///runs/mlflow.db]; repeatable (needs tuning[mlflow]).")
@click.option("--lr-range", "lr_range", default=None, metavar="auto|LOW,HIGH",
              help="Narrow the learning_rate axis (and its grid) to LOW..HIGH inside the declared range, or to "
                   "the LR range test's suggestion (auto: reuses runs/lr-find/<model>-<data>/lr_find.json for the "
                   "same space and budget, else runs 'tuning lr-find' first); recorded in config.toml.")
@weights_option
@handle_errors
def search(data_dir: Path, params: str | None, tensorboard: bool, track: tuple[str, ...], **options: Any) -> None:
    """Search hyperparameters, retrain the best, test it once, write the report and export the model."""
    from tuning.pipeline import SearchRequest, run_search

    if options["lr_range"] is not None:
        from tuning.lrfind import parse_lr_range

        parse_lr_range(options["lr_range"])  # a typo fails before TensorFlow's start-up

    chosen = tuple(p.strip() for p in params.split(",") if p.strip()) if params is not None else None
    request = SearchRequest(data=data_dir, params=chosen, track=(("tensorboard",) if tensorboard else ()) + track,
                            **options)  # other options are named as its fields
    _quiet_libraries()
    printer = _progress_printer()

    def show(event: Mapping[str, Any]) -> None:
        printer(event)
        if event["event"] == "study" and request.lr_range is not None:  # what auto chose, said before any trial
            lr = event["space"].params["learning_rate"]
            click.echo(f"Learning rate searched in {lr.low:.3g} .. {lr.high:.3g} (--lr-range {request.lr_range})")

    try:
        outcome = run_search(request, on_event=show)
    except KeyboardInterrupt:
        raise click.ClickException("stopped; the running trial is marked failed. Rerun the same command to "
                                   "continue the study") from None
    if outcome is None:
        click.echo("Keras Tuner worker finished its trials; the chief retrains, tests and reports.")
        return
    _summary(outcome)


def _quiet_libraries() -> None:
    """Our progress lines replace Optuna's per-trial log."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)


@cli.command("lr-find")
@click.option("--model", required=True, help="Registered model name (see 'tuning models list').")
@click.option("--data", "data_dir", type=click.Path(path_type=Path), default=Path("datasets/demo"),
              show_default=True, help="Dataset folder with raw/<class>/ images.")
@click.option("--space", default=None, help="Search-space TOML file [the model's built-in one].")
@click.option("--budget", default="auto", show_default=True,
              help="quick, full or auto (as for search): the base parameters the range test trains with.")
@click.option("--preset", default=None, metavar="NAME", help="Start from the space's [presets.NAME].")
@click.option("--start", type=float, default=1e-7, show_default=True, help="First learning rate.")
@click.option("--end", type=float, default=1.0, show_default=True, help="Last learning rate.")
@click.option("--steps", type=click.IntRange(min=3), default=100, show_default=True,
              help="Batches; the rate rises by an equal factor each (the training split is cycled as needed).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--precision", default="auto", show_default=True, help="As for search.")
@weights_option
@handle_errors
def lr_find(model: str, data_dir: Path, space: str | None, budget: str, preset: str | None, start: float,
            end: float, steps: int, seed: int, precision: str, weights: str | None) -> None:
    """LR range test: one short run with the rate rising exponentially; plot, json and a suggested range."""
    from tuning.lrfind import check_options

    check_options(start, end, steps)
    from tuning.data.manifest import raw_dir
    from tuning.lrfind import find_lr
    from tuning.models import get_model_fn
    from tuning.runtime import PRECISIONS
    from tuning.space import load_space

    if precision not in PRECISIONS:
        raise ToolkitError(f"unknown --precision '{precision}'; known: {', '.join(PRECISIONS)}")
    get_model_fn(model)
    raw_dir(data_dir)
    declared = load_space(space or model)
    if declared.model != model:
        raise ToolkitError(f"{declared.source} declares model '{declared.model}', not '{model}'; pass --model "
                           f"{declared.model}")
    if preset:
        declared = declared.with_preset(preset)
    if weights is not None:
        declared = declared.with_weights(weights)
    settings = runtime.resolve(precision=precision)
    budget = budget if budget != "auto" else ("full" if settings["device"] == "gpu" else "quick")
    narrowed, _ = declared.with_budget(budget)
    from tuning.models.backbones import check_study_weights

    check_study_weights(model, narrowed)
    click.echo(f"LR range test: {model} on {data_dir} (budget {budget}), {steps} batches from {start:g} to {end:g}")
    r = find_lr(model, data_dir, narrowed, budget=budget, start=start, end=end, steps=steps, seed=seed,
                settings=settings)
    why = {"diverged": "loss > 4x its minimum", "nan": "loss became NaN"}.get(r.stopped)
    stop = f"stopped at {r.stopped_at:.3g} ({why})" if why else f"no divergence up to {r.end:g}"
    click.echo(f"Suggested learning rate {r.low:.3g} .. {r.high:.3g} (steepest {r.steepest:.3g}, minimum loss at "
               f"{r.min_loss:.3g}; {len(r.rates)} batches, {stop}, {r.seconds:.1f}s) -> "
               f"{r.folder / 'lr_find.png' if r.folder else ''}")


# ----- results -------------------------------------------------------------------------------------------
@cli.command()
@study_option
@handle_errors
def report(study: str) -> None:
    """(Re)build runs/<study>/report/index.html from the study folder and its storage."""
    _start_keras_quietly()
    from tuning.pipeline import study_folder
    from tuning.report import build_report

    _quiet_libraries()
    click.echo(f"Report: {build_report(study_folder(study))}")


@cli.command()
@study_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0 shows the study, and lets anyone edit it, on the network).")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="0 picks a free port.")
@handle_errors
def dashboard(study: str, host: str, port: int) -> None:
    """Open the study's own storage in optuna-dashboard (needs tuning[dashboard]); Ctrl-C stops it."""
    from tuning.pipeline import study_folder
    from tuning.tracking.dashboard import open_dashboard

    board = open_dashboard(study_folder(study), host=host, port=port)
    click.echo(f"optuna-dashboard for study '{board.study}' ({board.storage}) at {board.url}")
    click.echo("Press Ctrl-C to stop.")
    try:
        board.serve_forever()
    except KeyboardInterrupt:
        click.echo("Stopped.")


@cli.command()
@study_option
@click.option("--fit-on", type=click.Choice(["train", "train+val"]), default="train", show_default=True,
              help="train: keep the best validation epoch; train+val: train for the best trial's best epoch count.")
@click.option("--seeds", type=click.IntRange(min=1), default=1, show_default=True,
              help="Retrain with this many seeds; the first seed's model is kept, the spread is reported.")
@click.option("--ensemble", type=click.IntRange(min=1), default=1, show_default=True, metavar="K",
              help="Retrain the K best distinct trials and ship the mean of their probabilities (kept in "
                   "final/ensemble/, beside the single model).")
@click.option("--tta", type=click.Choice(["none", "flip"]), default="none", show_default=True,
              help="flip: average each image's probabilities with its mirror's (one model or the ensemble).")
@click.option("--pick", default="best", show_default=True, metavar="RULE",
              help="Which trial to retrain: best (by the quality objective), best:OBJECTIVE (e.g. best:size_mb), "
                   "trial:N, or smallest-within:DELTA (the cheapest model by the first cost objective among those "
                   "within DELTA of the best quality, e.g. 0.01 = one point of accuracy).")
@weights_option
@click.option("--backend", default=None, metavar="auto|tensorflow|jax|torch",
              help="Keras backend to retrain on [KERAS_BACKEND, else the study's own].")
@handle_errors
def retrain(study: str, fit_on: str, seeds: int, ensemble: int, tta: str, pick: str, weights: str | None,
            backend: str | None) -> None:
    """Retrain the study's best configuration (or the one --pick names; or the --ensemble K best) from scratch,
    test it once, rebuild report and export."""
    from tuning.evaluate import parse_pick
    from tuning.pipeline import study_folder
    from tuning.study import read_config

    parse_pick(pick)  # a typo fails before the backend's start-up
    folder = study_folder(study)
    config = read_config(folder)  # a missing study fails before the progress line
    chosen = runtime.requested_backend(backend)
    runtime.use_backend(config.backend if chosen == "auto" else chosen)  # before anything imports keras
    runtime.load_backend()
    from tuning.evaluate import retrain_members, retrain_study
    from tuning.export import export_study
    from tuning.report import build_report

    _quiet_libraries()
    # the trials it trains, checked (a bad --pick, too few trials, a missing weights file) before the progress line
    members = retrain_members(folder, ensemble=ensemble, tta=tta, seeds=seeds, fit_on=fit_on, weights=weights,
                              pick=pick)
    if ensemble > 1 or tta != "none":
        click.echo(f"Retraining {folder}: trial(s) {', '.join(f'#{m.trial}' for m in members)} on {fit_on}, "
                   f"test-time augmentation {tta}, then one test evaluation...")
        _ensemble_summary(retrain_study(folder, fit_on=fit_on, ensemble=ensemble, tta=tta, weights=weights,
                                        members=members))
        click.echo(f"Report: {build_report(folder)}")
        click.echo(f"Model:  {export_study(folder).model}")
        return
    click.echo(f"Retraining {folder} (trial #{members[0].trial}, --pick {pick}) on {fit_on} with {seeds} seed(s), "
               "then one test evaluation each...")
    m = retrain_study(folder, fit_on=fit_on, seeds=seeds, pick=pick, weights=weights, members=members)
    low, high = m["accuracy_ci95"]
    click.echo(f"Test accuracy {m['accuracy']:.3f} (95% Wilson CI {low:.3f}-{high:.3f}, n={m['n']}), balanced "
               f"accuracy {m['balanced_accuracy']:.3f}, macro ROC-AUC {m['roc_auc_macro']:.3f}")
    _headline_notes(m)
    s = m["seeds"]
    if s["k"] > 1:
        click.echo(f"Across {s['k']} seeds: mean {s['mean']:.3f}, std {s['std']:.3f}, 95% t-interval "
                   f"{s['ci95'][0]:.3f}-{s['ci95'][1]:.3f} ({', '.join(f'{a:.3f}' for a in s['accuracies'])})")
    click.echo(f"Report: {build_report(folder)}")
    click.echo(f"Model:  {export_study(folder).model}")


def _ensemble_summary(m: Mapping[str, Any]) -> None:
    """Each member, the ensemble, McNemar against the best single model, and which model ships."""
    def ci(pair: list[float]) -> str:
        return f"{pair[0]:.3f}-{pair[1]:.3f}"

    for i, member in enumerate(m["members"]):
        differs = " ".join(f"{k}={_short(v)}" for k, v in member["differs"].items())
        click.echo(f"  member trial #{member['trial']}{' (best)' if i == 0 else ''}: test accuracy "
                   f"{member['accuracy']:.3f} (95% CI {ci(member['accuracy_ci95'])}), balanced accuracy "
                   f"{member['balanced_accuracy']:.3f} ({ci(member['balanced_accuracy_ci95'])})"
                   + (f", with flip {member['accuracy_tta']:.3f}" if "accuracy_tta" in member else "")
                   + (f"; {differs}" if differs else ""))
    what = f"Ensemble of {len(m['members'])}" if m["kind"] == "ensemble" else "Best model"
    click.echo(f"{what}{' with flip TTA' if m['tta'] == 'flip' else ''}: test accuracy {m['accuracy']:.3f} "
               f"(95% Wilson CI {ci(m['accuracy_ci95'])}, n={m['n']}), balanced accuracy "
               f"{m['balanced_accuracy']:.3f} (95% posterior interval {ci(m['balanced_accuracy_ci95'])}), "
               f"macro ROC-AUC {m['roc_auc_macro']:.3f}")
    _headline_notes(m)
    t = m["mcnemar"]
    click.echo(f"McNemar, best single model (trial #{t['single_trial']}, {t['single_accuracy']:.3f}) vs this: "
               f"only single right {t['only_single']}, only this right {t['only_ensemble']} of {t['n']}; "
               f"exact p = {t['p_exact']:.4g} (mid-p {t['p_mid']:.4g})")
    click.echo("Shipped model: this one (final/ensemble/; final/metrics.json says \"shipped\": \"ensemble\"); the "
               "single model's results stay in final/")


@cli.command()
@click.argument("study_a", metavar="STUDY_A")
@click.argument("study_b", metavar="STUDY_B")
@handle_errors
def compare(study_a: str, study_b: str) -> None:
    """Compare two studies' final models on their shared test split (McNemar's exact test)."""
    from tuning.compare import compare_studies
    from tuning.pipeline import study_folder

    c = compare_studies(study_folder(study_a), study_folder(study_b))
    for label, side in (("A", c.a), ("B", c.b_side)):
        click.echo(f"{label} {side.folder}: test accuracy {side.accuracy:.3f} ({side.correct}/{side.n}, "
                   f"95% Wilson CI {side.ci95[0]:.3f}-{side.ci95[1]:.3f})")
    click.echo(f"Paired on {c.a.n} test images: both right {c.both_right}, only A right {c.only_a}, "
               f"only B right {c.only_b}, both wrong {c.both_wrong}")
    click.echo(f"McNemar exact two-sided binomial test on the {c.only_a + c.only_b} discordant pairs: "
               f"p = {c.p_exact:.4g} (mid-p {c.p_mid:.4g})")
    verdict = "differ" if c.p_exact < 0.05 else "cannot be told apart"
    click.echo(f"At the 5% level the two models {verdict} on this test split (difference {c.difference:+.3f}).")


@cli.command()
@study_option
@click.option("--format", "formats", default="keras", show_default=True, metavar="LIST",
              help="Comma-separated: keras, savedmodel, tflite, onnx (or all).")
@handle_errors
def export(study: str, formats: str) -> None:
    """Write the retrained model to runs/<study>/export/ in each format, with its model card."""
    from tuning.export import export_study, parse_formats
    from tuning.pipeline import study_folder

    chosen = parse_formats(formats)
    _start_keras_quietly()
    result = export_study(study_folder(study), formats=chosen)
    for fmt, path in result.files.items():
        click.echo(f"{fmt:<11} {path}")
    click.echo(f"Card:       {result.folder / 'model_card.md'}")
    if result.skipped:  # what was written stays; the exit status says a requested format is missing
        raise ToolkitError("; ".join(f"{fmt} not exported: {reason}" for fmt, reason in result.skipped.items()))


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--top-k", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON lines: one object per image (file, top classes or error), one per line.")
@click.option("--csv", "csv_file", type=click.Path(path_type=Path), default=None,
              help="Write the rows to this CSV file and print only a one-line summary.")
@click.option("--safe/--no-safe", default=True, show_default=True,
              help="Refuse a SavedModel that its model_card.json's sha256 does not vouch for (a SavedModel runs "
                   "whatever ops it holds); --no-safe runs it after a warning. .keras files always load in Keras "
                   "safe mode.")
@handle_errors
def predict(model: Path, images: tuple[Path, ...], top_k: int, as_json: bool, csv_file: Path | None,
            safe: bool) -> None:
    """Classify IMAGES (files or folders, any size) with an exported MODEL (.keras, SavedModel, .tflite or .onnx)."""
    from tuning.inference import check_csv_target

    if csv_file is not None:
        if as_json:
            raise ToolkitError("--json and --csv cannot be used together: --csv writes the rows to a file, "
                               "--json prints them")
        check_csv_target(csv_file)
    if model.suffix.lower() != ".onnx":  # onnxruntime alone runs an .onnx file
        _start_keras_quietly()
    from tuning import _io
    from tuning.inference import predict as run_predict
    from tuning.inference import predictions_table

    bar = ProgressBar("predict") if any(p.is_dir() for p in images) else None  # a folder may hold thousands
    result = run_predict(model, list(images), top_k=top_k, safe=safe, progress=bar)
    for warning in result.warnings:
        click.echo(f"Warning: {warning}", err=True)
    if bar is not None:
        bar.done()
    if csv_file is not None:
        _io.write_text(csv_file, predictions_table(result.rows))
        skipped = result.skipped()
        reasons = ", ".join(f"{n} {reason}" for reason, n in skipped.most_common())
        click.echo(f"Wrote {result.predicted} prediction(s) to {csv_file}; skipped {sum(skipped.values())} "
                   f"file(s){f' ({reasons})' if reasons else ''}")
        return
    if as_json:  # JSON lines: `jq`, pandas.read_json(lines=True) and a shell loop read it a row at a time
        for row in result.rows:
            click.echo(json.dumps(row, ensure_ascii=False))
        return
    for row in result.rows:
        if "error" in row:
            click.echo(f"{row['file']}\tskipped: {row['error']}")
        else:
            click.echo(row["file"] + "\t" + "\t".join(f"{t['class']} {t['probability']:.3f}" for t in row["top"]))


# ----- spaces and models ---------------------------------------------------------------------------------
@cli.group()
def spaces() -> None:
    """The search-space declarations (search_spaces/*.toml)."""


@spaces.command("list")
def spaces_list() -> None:
    from search_spaces import builtin_names

    for name in builtin_names():
        click.echo(name)


@spaces.command("show")
@click.argument("name")
@handle_errors
def spaces_show(name: str) -> None:
    """Print a space (built-in NAME or a TOML path) as a table, with its staged order and budgets."""
    from tuning.space import load_space

    space = load_space(name)
    click.echo(f"{space.source}: model {space.model}")
    click.echo(f"{'parameter':<14} {'kind':<7} {'range or values':<58} {'base':<10} {'searched':<8} condition")
    for pname, param in space.params.items():
        d = param.to_dict()
        if "values" in d:
            rng = ", ".join(map(str, d["values"]))
        elif d["type"] == "bool":
            rng = "false, true"
        else:
            rng = f"{d['low']:g} .. {d['high']:g}" + (" log" if d.get("log") else "") + \
                  (f" step {d['step']:g}" if "step" in d else "") + \
                  (f" grid {', '.join(f'{g:g}' for g in d['grid'])}" if "grid" in d else "")
        cond = " and ".join(f"{k} in {list(v)}" for k, v in param.when.items())
        click.echo(f"{pname:<14} {d['type']:<7} {rng:<58} {_short(space.base[pname]):<10} "
                   f"{'yes' if pname in space.search else '':<8} {cond}")
    click.echo(f"epochs: {space.base['epochs']}")
    click.echo(f"staged order: {' -> '.join(space.staged_order)}")
    for aug in space.augmentations.values():
        click.echo(f"augmentation {aug.name:<9} shift {aug.shift:g}  rotation {aug.rotation:g} deg  "
                   f"shear {aug.shear:g}  zoom {aug.zoom:g}")
    for b in space.budgets.values():
        fixed = ", ".join(f"{k}={v}" for k, v in b.fixed.items()) or "nothing fixed"
        click.echo(f"budget {b.name:<6} {b.trials} trials x {b.epochs} epochs; {fixed}")


@cli.group()
def models() -> None:
    """The registered architectures."""


@models.command("list")
@handle_errors
def models_list() -> None:
    from tuning.models import known_models

    for name in known_models():
        click.echo(name)


@models.command("show")
@click.argument("name")
@click.option("--size", type=int, default=96, show_default=True, help="Input image size in pixels.")
@click.option("--budget", default="full", show_default=True, help="Take width and dense units from this budget.")
@click.option("--plot", type=click.Path(path_type=Path), default=None, help="Also draw the structure to this PNG.")
@handle_errors
def models_show(name: str, size: int, budget: str, plot: Path | None) -> None:
    """Print the layer table and parameter count of model NAME at its space's base values."""
    _start_keras_quietly()
    from tuning.models import build_model, get_model_fn
    from tuning.models.describe import layer_table
    from tuning.report import plot_architecture
    from tuning.space import load_space

    get_model_fn(name)
    space, _ = load_space(name).with_budget(budget)
    space = space.with_base({"image_size": size}) if size in space.params["image_size"].grid_values() else space
    params = space.resolve({"image_size": size}) | {"augmentation": space.augmentation(str(space.base["augmentation"]))}
    model = build_model(name, {**params, "weights": "none"}, (size, size, 3), 3)  # the structure needs no download
    lines: list[str] = []
    model.summary(print_fn=lambda line, *a, **k: lines.append(line), line_length=96)
    click.echo("\n".join(lines))
    if plot is not None:
        click.echo(f"Structure: {plot_architecture(layer_table(model), f'{name} at {size} px', plot)}")


def main() -> None:
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)  # progress lines reach `make ... | tee log` as they happen
    cli(prog_name="tuning")


if __name__ == "__main__":
    main()
