"""What every engine shares: running one configuration (with repeats), recording it, and the rules that
make a study safe to share between workers and to resume after a crash."""

from __future__ import annotations

import math
import os
import socket
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuning import _io
from tuning.engines import EpochEvent, OnEvent, TrialEndEvent, TrialLimitReached, TrialStartEvent
from tuning.errors import StudyError, ToolkitError
from tuning.runtime import rss_mb
from tuning.space import SearchSpace
from tuning.study import StudyConfig, study_paths
from tuning.train import TrialData, train_trial
from tuning.trials import TrialStatus, direction, real_trials, state_counts, state_name

#: Called per epoch of the first run (repeat 0; with --cv, its fold 0) with (epoch index, objective value);
#: True prunes the trial. Every trial is pruned on the same fold, so their curves are comparable.
Reporter = Callable[[int, float], bool]
WORKER_ATTR = "worker"
POLL_SECONDS = 2.0


@dataclass
class Outcome:
    """One configuration's result over its repeats; ``value`` is the mean objective."""

    status: TrialStatus
    value: float
    reason: str = ""
    spread: float = 0.0
    seconds: float = 0.0
    epochs: int = 0
    history: dict[str, list[float]] | None = None
    costs: dict[str, float] | None = None  # --objectives: the model's cost objectives (tuning.costs)


def worker_id() -> dict[str, Any]:
    """Who trains the trial: host, process and the GPUs it sees (one each under ``--workers N`` on N GPUs)."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "gpus": os.environ.get("CUDA_VISIBLE_DEVICES", "")}


class TrialRunner:
    """Trains one configuration for an engine: repeats x folds (``--cv``; the value is the mean over all of
    them, the spread their standard deviation), progress events and ``trials/<id>/history.json``."""

    def __init__(self, config: StudyConfig, space: SearchSpace, data: TrialData, folder: Path,
                 on_event: OnEvent) -> None:
        self.config, self.space, self.data, self.on_event = config, space, data, on_event
        self.trials_dir = study_paths(folder)["trials"]

    def run(self, key: str | int, params: Mapping[str, Any], *, epochs: int | None = None,
            report: Reporter | None = None) -> Outcome:
        epochs = epochs or self.config.epochs
        self.on_event(TrialStartEvent(event="trial_start", number=key, params=dict(params)))
        objective = self.config.objective
        results = []
        folds = self.config.cv
        runs = [(repeat, fold) for repeat in range(self.config.repeats) for fold in range(folds)]
        for index, (repeat, fold) in enumerate(runs):

            def hook(epoch: int, logs: Mapping[str, float], first: bool = index == 0) -> bool:
                self.on_event(EpochEvent(event="epoch", number=key, epoch=epoch + 1, epochs=epochs, logs=logs))
                return first and report is not None and report(epoch, float(logs.get(objective, math.nan)))

            data = self.data.with_fold(fold, folds) if folds > 1 else self.data
            result = train_trial(self.config.model, params, data, self.space, epochs=epochs,
                                 seed=self.config.seed + repeat, hooks=[hook], objective=objective)
            results.append(result)
            if result.status != "complete":
                break
        values = [r.objective(objective) for r in results]
        last = results[-1]
        outcome = Outcome(
            status=last.status, value=statistics.fmean(values) if last.status == "complete" else values[-1],
            reason=last.reason, spread=statistics.pstdev(values) if len(values) > 1 else 0.0,
            seconds=sum(r.seconds for r in results), epochs=sum(r.epochs for r in results),
            history=results[0].history,
        )
        if self.config.objectives and outcome.status == "complete":
            self._measure_costs(outcome, params)
        _io.write_json(self.trials_dir / str(key) / "history.json", {
            "params": dict(params), "status": outcome.status, "value": outcome.value, "spread": outcome.spread,
            "reason": outcome.reason, "seconds": outcome.seconds, "precision": results[0].precision,
            "backend": results[0].backend,
            "history": results[0].history, "repeats": [r.history for r in results[1:]], "values": values,
            "folds": self.config.cv, **({"costs": outcome.costs} if outcome.costs else {}),
        })
        end = TrialEndEvent(event="trial_end", number=key, status=outcome.status, value=outcome.value,
                            reason=outcome.reason, seconds=outcome.seconds, pid=os.getpid(), rss_mb=rss_mb())
        if outcome.costs:
            end["costs"] = outcome.costs
        self.on_event(end)
        return outcome

    def _measure_costs(self, outcome: Outcome, params: Mapping[str, Any]) -> None:
        """The cost objectives of a complete trial, measured once on its rebuilt network; a trial whose costs
        cannot be measured fails with the reason, as a training failure does."""
        from tuning.costs import measure_costs

        try:
            n_classes = len(self.data.arrays(int(params["image_size"])).classes)
            outcome.costs = measure_costs(self.config.objectives[1:], self.config.model, params, n_classes=n_classes)
        except ToolkitError as exc:
            outcome.status, outcome.reason = "failed", str(exc)


def record_attrs(trial: Any, outcome: Outcome) -> None:
    """The evidence a report needs, stored with the trial in the Optuna storage."""
    trial.set_user_attr("seconds", outcome.seconds)
    trial.set_user_attr("epochs", outcome.epochs)
    trial.set_user_attr("history", outcome.history or {})
    if outcome.spread:
        trial.set_user_attr("spread", outcome.spread)
    if outcome.reason:
        trial.set_user_attr("fail_reason", outcome.reason)
    if outcome.costs:
        trial.set_user_attr("costs", outcome.costs)


def fail_dead_workers(study: Any) -> list[int]:
    """Mark RUNNING trials whose worker is gone as failed and queue their parameters again.

    A worker on this host is gone when its process no longer exists (found at once, e.g. after SIGKILL);
    workers elsewhere are found by the database storage's heartbeat.
    """
    import optuna
    from optuna.trial import TrialState

    storage = study._storage
    failed = []
    if isinstance(storage, optuna.storages.RDBStorage) and storage.heartbeat_interval:
        before = {t.number: t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        optuna.storages.fail_stale_trials(study)
        for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
            if t.number in before:  # its worker stopped beating: run the configuration again
                study.enqueue_trial(before[t.number].params, user_attrs={"rerun_of": t.number})
                failed.append(t.number)
    here = socket.gethostname()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = t.user_attrs.get(WORKER_ATTR) or {}
        if worker.get("host") == here and worker.get("pid") != os.getpid() and not _alive(int(worker.get("pid", 0))):
            try:
                storage.set_trial_user_attr(t._trial_id, "fail_reason", f"worker {worker['pid']} died mid-trial")
                storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            except RuntimeError:  # another worker marked it first (optuna's UpdateFinishedTrialError)
                continue
            study.enqueue_trial(t.params, user_attrs={"rerun_of": t.number})
            failed.append(t.number)
    return failed


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def failure_limit(config: StudyConfig) -> int:
    """``--max-failures``; 0 means ``max(3, trials)``."""
    return config.max_failures or max(3, config.trials)


def check_failures(trials_or_study: Any, config: StudyConfig, trials_dir: Path, *, first_trial: int) -> None:
    """Stop the study once the trials of THIS run (numbered ``first_trial`` or later) failed ``--max-failures``
    times, for every engine alike.

    Failures of earlier runs do not count: they stopped those runs already, and a rerun after fixing the cause
    must train instead of stopping at once. Surplus trials (lost races, never trained) are not failures.
    """
    limit = failure_limit(config)
    failed = sum(state_name(t) == "failed" and t.number >= first_trial for t in real_trials(trials_or_study))
    if failed >= limit:
        raise StudyError(f"{failed} trials failed (limit --max-failures {limit}); see the reasons in "
                         f"{trials_dir}/*/history.json, fix the space or data, then rerun to continue")


def work_loop(study: Any, config: StudyConfig, runner: TrialRunner, *, suggest: Callable[[Any], dict[str, Any]],
              prune: bool, limit: int | None = None, first_trial: int | None = None) -> None:
    """Train trials until the study holds ``config.trials`` finished ones.

    Several workers may share the storage: one starts a trial only while fewer than ``trials`` are finished
    or running, waits for the others' trials otherwise, and returns once the count is reached.
    ``first_trial`` is the study's first trial number of this run (for the failure limit): the trials already
    there when this call starts where None; worker processes of one command get the command's.
    """
    if first_trial is None:
        first_trial = len(study.get_trials(deepcopy=False))
    trained = 0
    while True:
        fail_dead_workers(study)
        trials = study.get_trials(deepcopy=False)  # one read of the storage per round
        counts = state_counts(trials)
        done, running = counts["complete"] + counts["pruned"], counts["running"]
        if done >= config.trials:
            return
        check_failures(trials, config, runner.trials_dir, first_trial=first_trial)
        if done + running >= config.trials:
            time.sleep(POLL_SECONDS)  # another worker's trial decides whether more are needed
            continue
        if limit is not None and trained >= limit:
            raise TrialLimitReached
        run_one(study, runner, suggest, prune=prune, limit=config.trials)
        trained += 1


def run_one(study: Any, runner: TrialRunner, suggest: Callable[[Any], dict[str, Any]], *, prune: bool,
            limit: int | None = None) -> Outcome | None:
    """Train one trial through ``study.optimize`` so Optuna owns its states (Ctrl-C marks it failed).

    With ``limit``, a trial that lost a race with other workers (``limit`` trials already ahead of it) ends
    at once as a failed "surplus" trial instead of training one too many.
    """
    import optuna
    from optuna.trial import TrialState

    result: list[Outcome] = []
    config = runner.config
    minimise = direction(config.objective) == "minimize"
    # --objectives: one value per objective; Optuna marks a trial returning NaNs failed, as with one objective.
    no_value: float | list[float] = [math.nan] * len(config.objectives) if config.objectives else math.nan

    def objective(trial: optuna.Trial) -> float | list[float]:
        trial.set_user_attr(WORKER_ATTR, worker_id())
        if limit is not None:
            states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
            ahead = [t for t in study.get_trials(deepcopy=False, states=states) if t.number < trial.number]
            if len(ahead) >= limit:
                trial.set_user_attr("surplus", True)
                return no_value

        best: float | None = None

        def report(epoch: int, value: float) -> bool:
            """Reports the best value so far: a trial is scored by its best epoch, and one epoch's value
            swings too much to rank trials by (docs/engines-study.md)."""
            nonlocal best
            if not math.isfinite(value):
                return False
            best = value if best is None else (min if minimise else max)(best, value)
            trial.report(best, epoch)
            return prune and trial.should_prune()

        params = suggest(trial)
        try:  # a multi-objective study is not pruned, and Optuna's Trial.report refuses one
            outcome = runner.run(trial.number, params, report=None if config.objectives else report)
        except KeyboardInterrupt:
            trial.set_user_attr("fail_reason", "interrupted (Ctrl-C)")
            raise
        record_attrs(trial, outcome)
        result.append(outcome)
        if outcome.status == "pruned":
            raise optuna.TrialPruned()
        if outcome.status != "complete":
            return no_value
        return [outcome.value, *(outcome.costs or {}).values()] if config.objectives else outcome.value

    study.optimize(objective, n_trials=1, catch=())
    return result[0] if result else None


def wait_for_others(study: Any) -> None:
    """Block until no live worker has a trial running, so the final retrain sees every result."""
    from optuna.trial import TrialState

    while True:
        fail_dead_workers(study)
        if not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            return
        time.sleep(POLL_SECONDS)
