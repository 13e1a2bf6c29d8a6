"""The learning-rate range test (Smith 2015, fastai's ``lr_find``): one short run whose rate rises exponentially
per batch, the smoothed loss against the rate, and a suggested range that ``tuning search --lr-range auto``
narrows the space's ``learning_rate`` axis to.

The model is built and compiled exactly as a trial builds it (``tuning.train``: the space's base parameters,
its augmentation, class weights, the dtype policy), on the training split only, so the suggested rates are
those of the network a search trains. Only the schedule differs: the finder sets the rate itself each batch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from tuning import _io
from tuning.errors import DataError, SpaceError, ToolkitError
from tuning.space import Float, SearchSpace

#: fastai's smoothing of the per-batch loss (an exponential moving average with bias correction).
BETA = 0.98
#: The run stops once the smoothed loss exceeds this multiple of its minimum (fastai's divergence rule).
DIVERGENCE = 4.0
DEFAULT_START, DEFAULT_END, DEFAULT_STEPS = 1e-7, 1.0, 100


@dataclass
class LRFindResult:
    """What one range test measured and suggests; ``to_dict`` is ``lr_find.json``."""

    model: str
    dataset: str
    budget: str
    space: dict[str, Any]
    start: float
    end: float
    steps: int
    seed: int
    rates: list[float]
    losses: list[float]  # smoothed
    raw_losses: list[float]
    stopped: str  # "end" (all steps ran), "diverged" (smoothed loss > 4x its minimum) or "nan"
    stopped_at: float | None  # the rate of the batch that stopped the run
    steepest: float
    min_loss: float
    low: float
    high: float
    seconds: float = 0.0
    precision: str = "float32"
    cache: dict[str, Any] = field(default_factory=dict)
    folder: Path | None = None

    @property
    def suggestion(self) -> tuple[float, float]:
        return self.low, self.high

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "dataset": self.dataset, "budget": self.budget, "cache": self.cache,
            "start": self.start, "end": self.end, "steps": self.steps, "seed": self.seed,
            "precision": self.precision, "seconds": round(self.seconds, 3),
            "stopped": self.stopped, "stopped_at": self.stopped_at,
            "suggestion": {"steepest": self.steepest, "min_loss": self.min_loss, "low": self.low, "high": self.high,
                           "rule": RULE},
            "rates": self.rates, "losses": self.losses, "raw_losses": self.raw_losses, "space": self.space,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, folder: Path | None = None) -> LRFindResult:
        s = d["suggestion"]
        return cls(d["model"], d["dataset"], d["budget"], dict(d["space"]), float(d["start"]), float(d["end"]),
                   int(d["steps"]), int(d["seed"]), list(d["rates"]), list(d["losses"]), list(d["raw_losses"]),
                   str(d["stopped"]), d["stopped_at"], float(s["steepest"]), float(s["min_loss"]), float(s["low"]),
                   float(s["high"]), float(d.get("seconds", 0.0)), str(d.get("precision", "float32")),
                   dict(d.get("cache", {})), folder)


RULE = ("low = steepest / 10 (at least the first tested rate), high = min-loss rate / 10 (the min-loss rate "
        "itself when that is not above low); steepest = the rate of the most negative slope of the smoothed loss "
        "against log10(rate), up to the minimum; the first tenth of the batches is skipped")


def rates(start: float, end: float, steps: int) -> np.ndarray:
    """The rate of each batch: ``start`` to ``end`` in ``steps`` equal ratios (equal steps on a log axis)."""
    return start * (end / start) ** (np.arange(steps) / max(1, steps - 1))


def smooth(losses: list[float], beta: float = BETA) -> list[float]:
    """fastai's smoothed loss: an exponential moving average divided by ``1 - beta**n`` so early values are
    not pulled towards 0 (the average starts at 0)."""
    avg, out = 0.0, []
    for i, loss in enumerate(losses):
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta ** (i + 1)))
    return out


def suggest(rates: list[float], losses: list[float]) -> tuple[float, float, float, float]:
    """(steepest, min_loss, low, high) from the smoothed ``losses`` at ``rates``, by ``RULE``.

    Like fastai's steepest-descent and minimum/10 suggestions: the minimum itself is already too high a rate
    (the loss is about to diverge there), a tenth of it is the largest safe one; the steepest fall is where
    training makes the most progress per step, and a tenth of it the smallest rate still worth trying.
    Only points up to the minimum count, so the range lies below the divergence point; the first tenth is
    skipped (an average of one or two batches, whose noise would otherwise often be the "minimum").
    """
    skip = max(1, len(losses) // 10)  # the average of the first few batches is mostly noise (fastai skips 10)
    if len(losses) - skip < 3:
        raise ToolkitError(f"the range test recorded only {len(losses)} batch(es) before the loss diverged; lower "
                           "--start or raise --steps")
    lr, loss = np.asarray(rates, dtype=float)[skip:], np.asarray(losses, dtype=float)[skip:]
    best = int(np.argmin(loss))
    if best == 0:
        raise ToolkitError(f"the loss only rose from the rate {lr[0]:.3g} on, so there is no range to suggest; "
                           "lower --start")
    slopes = np.gradient(loss[: best + 1], np.log10(lr[: best + 1]))
    steepest, min_loss = float(lr[int(np.argmin(slopes))]), float(lr[best])
    low = max(steepest / 10, float(rates[0]))
    high = min_loss / 10 if min_loss / 10 > low else min_loss
    return steepest, min_loss, low, high


def _callback(schedule: np.ndarray, state: dict[str, Any]) -> Any:
    """Sets each batch's rate before it runs and records its own loss after (the metrics are reset every
    batch, so Keras' logged loss is that batch's, not the epoch's running mean)."""
    import keras

    class _RangeTest(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
            self.model.optimizer.learning_rate = float(schedule[batch])

        def on_train_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
            loss = float((logs or {}).get("loss", math.nan))
            self.model.reset_metrics()
            rate = float(schedule[batch])
            if not math.isfinite(loss):
                state["stopped"], state["stopped_at"] = "nan", rate
                self.model.stop_training = True
                return
            state["rates"].append(rate)
            state["raw"].append(loss)
            smoothed = smooth(state["raw"])[-1]
            state["smoothed"].append(smoothed)
            state["best"] = min(state.get("best", smoothed), smoothed)
            if batch > 0 and smoothed > DIVERGENCE * state["best"]:
                state["stopped"], state["stopped_at"] = "diverged", rate
                self.model.stop_training = True

    return _RangeTest()


def finder_folder(model: str, dataset: Path, *, runs: Path = Path("runs")) -> Path:
    """``runs/lr-find/<model>-<data>/``: one finder result per model and dataset."""
    return Path(runs) / "lr-find" / f"{model}-{Path(dataset).name}"


def _cache_identity(dataset: Path, space: SearchSpace) -> dict[str, Any]:
    """The prepared arrays the finder trained on (file, size, modification time): a rebuilt cache is other data."""
    from tuning.data.prepare import cache_path

    path = cache_path(dataset, int(space.base["image_size"]))
    try:
        st = path.stat()
    except OSError:
        return {}
    return {"file": path.name, "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def check_options(start: float, end: float, steps: int) -> None:
    if not (math.isfinite(start) and math.isfinite(end) and 0 < start < end):
        raise ToolkitError(f"--start {start:g} and --end {end:g}: need 0 < start < end")
    if steps < 3:
        raise ToolkitError(f"--steps must be >= 3, got {steps}")


def find_lr(model_name: str, dataset: Path, space: SearchSpace, *, budget: str, start: float = DEFAULT_START,
            end: float = DEFAULT_END, steps: int = DEFAULT_STEPS, seed: int = 0, runs: Path = Path("runs"),
            settings: Mapping[str, Any] | None = None) -> LRFindResult:
    """Run the range test on the space's base parameters and write ``lr_find.json`` and ``lr_find.png`` to
    ``finder_folder``; ``space`` is the one a search would start from (preset and budget applied).

    ``steps`` batches are drawn from the shuffled training split, cycling through it as often as needed,
    so a small dataset still tests the whole range. ``settings``: ``runtime.resolve()``'s, applied for the run.
    """
    import keras

    from tuning import runtime
    from tuning.models import build_model
    from tuning.train import TrialData, compile_model, epoch_order, make_batches

    check_options(start, end, steps)
    settings = dict(settings) if settings is not None else runtime.resolve()
    began = time.perf_counter()
    params = {**space.resolve({}), "schedule": "constant"}  # the finder sets each batch's rate itself
    data = TrialData.for_space(dataset, space, seed=seed)
    size, batch = int(params["image_size"]), int(params["batch_size"])
    rows = data.split_rows(size, str(params["split"]))["train"]
    if len(rows) == 0:
        raise DataError(f"{dataset}: the training split of {params['split']} is empty; add images")
    schedule = rates(start, end, steps)
    state: dict[str, Any] = {"rates": [], "raw": [], "smoothed": [], "stopped": "end", "stopped_at": None}
    with runtime.applied(settings):
        policy = keras.config.dtype_policy()
        keras.backend.clear_session()
        keras.config.set_dtype_policy(policy)
        keras.utils.set_random_seed(seed)
        n_classes = len(data.classes)
        model = build_model(model_name, {**params, "augmentation": space.augmentation_for(params)},
                            (size, size, 3), n_classes)
        compile_model(model, {**params, "learning_rate": float(schedule[0])})
        passes = math.ceil(steps * batch / len(rows))  # the split cycled, each pass in its own shuffled order
        cycled = np.concatenate([rows[epoch_order(len(rows), seed, k)] for k in range(passes)])
        arrays = data.arrays(size)
        model.fit(make_batches(arrays.x, arrays.y, n_classes, batch, shuffle_seed=None, indices=cycled), epochs=1,
                  steps_per_epoch=steps,
                  verbose=0, callbacks=[_callback(schedule, state)], class_weight=data.class_weight(size),
                  shuffle=False)  # the dataset shuffles itself
        precision = policy.name
        del model
    steepest, min_loss, low, high = suggest(state["rates"], state["smoothed"])
    result = LRFindResult(model_name, Path(dataset).resolve().as_posix(), budget, space.to_dict(), start, end, steps,
                          seed, state["rates"], state["smoothed"], state["raw"], state["stopped"],
                          state["stopped_at"], steepest, min_loss, low, high, time.perf_counter() - began,
                          precision, _cache_identity(dataset, space), finder_folder(model_name, dataset, runs=runs))
    write_result(result)
    return result


def write_result(result: LRFindResult) -> Path:
    """``lr_find.json`` and ``lr_find.png`` in the result's folder (the json last: its presence means finished)."""
    assert result.folder is not None
    plot(result, result.folder / "lr_find.png")
    _io.write_json(result.folder / "lr_find.json", result.to_dict())
    return result.folder / "lr_find.json"


def plot(result: LRFindResult, path: Path) -> Path:
    """Smoothed loss against the rate on a log axis, with the suggested range shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4))
    ax.plot(result.rates, result.raw_losses, color="0.75", lw=0.8, label="loss per batch")
    ax.plot(result.rates, result.losses, lw=1.8, label=f"smoothed (beta {BETA})")
    ax.axvspan(result.low, result.high, color="tab:green", alpha=0.2,
               label=f"suggested {result.low:.2g} .. {result.high:.2g}")
    ax.axvline(result.steepest, color="tab:red", ls="--", lw=1, label=f"steepest {result.steepest:.2g}")
    ax.axvline(result.min_loss, color="tab:purple", ls=":", lw=1, label=f"minimum {result.min_loss:.2g}")
    ax.set_xscale("log")
    finite = [v for v in result.losses if math.isfinite(v)]
    if finite:
        ax.set_ylim(min(finite) * 0.9, min(max(finite), DIVERGENCE * min(finite)) * 1.05)
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    how = {"end": "no divergence", "diverged": "stopped: loss > 4x its minimum", "nan": "stopped: NaN loss"}
    ax.set_title(f"LR range test: {result.model} on {Path(result.dataset).name} ({how.get(result.stopped, '')})")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    with _io.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def cached_result(model: str, dataset: Path, space: SearchSpace, *, budget: str, runs: Path = Path("runs")
                  ) -> LRFindResult | None:
    """The finished ``lr_find.json`` for this model, dataset, space and budget, or None (also for one the
    dataset's cache was rebuilt since, or a file that cannot be read: the finder then simply runs again)."""
    folder = finder_folder(model, dataset, runs=runs)
    try:
        d = _io.read_json(folder / "lr_find.json")
        result = LRFindResult.from_dict(d, folder=folder)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    same = (result.model == model and result.dataset == Path(dataset).resolve().as_posix()
            and result.budget == budget and result.space == space.to_dict()
            and result.cache == _cache_identity(dataset, space))
    return result if same else None


def parse_lr_range(text: str) -> str | tuple[float, float]:
    """``--lr-range``: ``auto`` or ``LOW,HIGH`` with 0 < LOW < HIGH (checked against the space by ``narrow``)."""
    if text.strip() == "auto":
        return "auto"
    parts = text.split(",")
    try:
        if len(parts) != 2:
            raise ValueError
        low, high = float(parts[0]), float(parts[1])
    except ValueError:
        raise ToolkitError(f"--lr-range {text!r}: expected auto or LOW,HIGH as two numbers, e.g. "
                           "--lr-range 1e-4,1e-3") from None
    if not (math.isfinite(low) and math.isfinite(high) and 0 < low < high):
        raise ToolkitError(f"--lr-range {text}: LOW must be above 0 and below HIGH, e.g. --lr-range 1e-4,1e-3")
    return low, high


def narrow(space: SearchSpace, low: float, high: float, *, what: str) -> SearchSpace:
    """The space with ``learning_rate`` searched in ``[low, high]`` only: its grid keeps the values inside (at
    least two: the range's ends when fewer fall inside) and its base is moved into the range.

    The range must lie inside the declared one, so a narrowed space is still the declaration's (a study that
    records it in config.toml resumes only with the same range).
    """
    param = space.params.get("learning_rate")
    if not isinstance(param, Float):
        raise SpaceError(f"{what}: {space.source} declares learning_rate as a fixed choice, not a float range; "
                         "declare params.learning_rate with type = \"float\", low and high")
    if not (param.low <= low < high <= param.high):
        raise SpaceError(f"{what}: {low:g}..{high:g} is outside the declared learning_rate range "
                         f"[{param.low:g}, {param.high:g}] of {space.source}; choose values inside it")
    grid = param.grid
    if grid:
        inside = tuple(v for v in grid if low <= v <= high)
        grid = inside if len(inside) >= 2 else (low, high)
    params = dict(space.params)
    params["learning_rate"] = replace(param, low=low, high=high, grid=grid)
    base = float(space.base["learning_rate"])
    return replace(space, params=params, base={**space.base, "learning_rate": min(max(base, low), high)})


def _round(value: float) -> float:
    return float(f"{value:.3g}")


def auto_range(space: SearchSpace, param_range: tuple[float, float]) -> tuple[float, float]:
    """A finder's suggestion rounded to 3 digits and clipped to the declared range (``--lr-range auto`` must
    stay inside it); an error when nothing of it is left."""
    param = space.params.get("learning_rate")
    if not isinstance(param, Float):
        raise SpaceError(f"--lr-range auto: {space.source} declares learning_rate as a fixed choice, not a float "
                         "range")
    low, high = max(_round(param_range[0]), param.low), min(_round(param_range[1]), param.high)
    if not low < high:
        raise SpaceError(f"--lr-range auto: the range test suggests {param_range[0]:.3g}..{param_range[1]:.3g}, "
                         f"outside the declared learning_rate range [{param.low:g}, {param.high:g}] of "
                         f"{space.source}; widen params.learning_rate or pass --lr-range LOW,HIGH")
    return low, high


def lr_range_space(space: SearchSpace, text: str, *, model: str, dataset: Path, budget: str, seed: int = 0,
                   runs: Path = Path("runs"), run_finder: bool = True, precision: str = "auto") -> SearchSpace:
    """The search's space after ``--lr-range``: narrowed by hand (``LOW,HIGH``) or to the range test's
    suggestion (``auto``: a finished ``lr_find.json`` for the same model, data, space and budget is reused,
    else the finder runs first, unless ``run_finder`` is False, which reads only)."""
    chosen = parse_lr_range(text)
    if chosen != "auto":
        assert isinstance(chosen, tuple)
        return narrow(space, *chosen, what=f"--lr-range {text}")
    result = cached_result(model, dataset, space, budget=budget, runs=runs)
    if result is None:
        if not run_finder:
            raise ToolkitError(f"--lr-range auto: no finished range test for {model} on {dataset} with this space "
                               f"and budget; run: tuning lr-find --model {model} --data {dataset} --budget {budget}")
        from tuning import runtime

        result = find_lr(model, dataset, space, budget=budget, seed=seed, runs=runs,
                         settings=runtime.resolve(precision=precision))
    return narrow(space, *auto_range(space, result.suggestion), what="--lr-range auto")
