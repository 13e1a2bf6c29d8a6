"""Open the Optuna storage named by a URL: ``journal:<file>``, ``sqlite:///...`` or ``postgresql://...``.

A URL that cannot be opened (wrong host, password, driver or path) is one line naming it, password masked,
and the cause, instead of SQLAlchemy's page of traceback; readers never create a storage that is missing.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

from tuning.errors import StudyError


def mask_password(url: str) -> str:
    """``scheme://user:***@host/db``: a URL safe to print."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def _cause(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc  # SQLAlchemy wraps the driver's error, whose text says what failed
    text = str(orig).strip().splitlines()
    line = text[0].strip() if text else type(orig).__name__
    if isinstance(exc, ImportError):
        line += " (install the database driver, or name an installed one: postgresql+psycopg://...)"
    return line


def open_storage(url: str, *, create: bool = True) -> Any:
    """A journal file is safe for several local processes; database URLs go through RDBStorage.

    ``create=False`` (reports, retrain, export) refuses a journal or SQLite file that does not exist, where
    opening it would make an empty study and a report saying no trial finished.
    """
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    if url.startswith("journal:"):
        path = Path(url[len("journal:"):])
        if not create and not path.is_file():
            raise StudyError(f"storage {url}: no such journal file; the study's trials are not there "
                             "(was the folder copied without optuna.journal?)")
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if url.startswith("sqlite:///") and not create:
        file = url[len("sqlite:///"):].partition("?")[0]
        if file and file != ":memory:" and not Path(file).is_file():
            raise StudyError(f"storage {url}: no such SQLite file; the study's trials are not there")
    if "://" not in url:
        raise StudyError(f"storage {mask_password(url)}: not a storage URL; use journal:FILE, sqlite:///FILE or "
                         "postgresql+psycopg://USER:PASSWORD@HOST/DB")
    import sqlalchemy.exc

    with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna, and the only way to find dead workers
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            return optuna.storages.RDBStorage(url, heartbeat_interval=60, grace_period=180)
        except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError, RuntimeError) as exc:
            raise StudyError(f"storage {mask_password(url)} cannot be opened: {_cause(exc)}; check the "
                             "driver, host, port, user, password and path of --storage") from None
