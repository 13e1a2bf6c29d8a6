"""Open the Optuna storage named by a URL: ``journal:<file>``, ``sqlite:///...`` or ``postgresql://...``."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any


def open_storage(url: str) -> Any:
    """A journal file is safe for several local processes; database URLs go through RDBStorage."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    if url.startswith("journal:"):
        path = Path(url[len("journal:"):])
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna, and the only way to find dead workers
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(url, heartbeat_interval=60, grace_period=180)
