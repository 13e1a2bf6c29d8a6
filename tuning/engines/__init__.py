"""Search engines. Each one asks the search space for parameters, calls ``train_trial`` and records every
trial in the study's Optuna storage, which is the single record reports and resume read."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

#: Progress events the CLI turns into lines: {"event": "trial_start" | "epoch" | "trial_end", ...}.
OnEvent = Callable[[Mapping[str, Any]], None]
ENGINES = ("optuna",)
