"""Hyperparameter search for CNN image classifiers on a few thousand images.

Collect and clean labelled images, search a CNN's hyperparameters with Optuna (or the study's
one-factor-at-a-time procedure), retrain the best configuration, test it once, report and export it.
"""

from __future__ import annotations

from tuning.errors import DataError, SpaceError, StudyError, ToolkitError, UnknownNameError

__all__ = ["DataError", "SpaceError", "StudyError", "ToolkitError", "UnknownNameError"]
