"""optuna-dashboard on a study's own storage: ``tuning dashboard --study S``.

The study's storage URL in ``config.toml`` (a journal file by default, SQLite or PostgreSQL with
``--storage``) is opened the way the toolkit opens it, so the dashboard shows exactly the trials that
reports and resume read, whichever engine ran them. Served by the standard library's threaded WSGI server
on 127.0.0.1 unless told otherwise: the dashboard can edit studies, so it is not put on the network by default.
"""

from __future__ import annotations

from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from tuning.errors import StudyError


class _ThreadedServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a browser's open connection does not keep Ctrl-C waiting


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No line per request on stderr: the CLI prints the address once."""


class Dashboard:
    """A bound, not yet serving, dashboard; ``url`` is known before ``serve_forever`` (port 0 picks one)."""

    def __init__(self, server: WSGIServer, *, study: str, study_id: int, storage: str) -> None:
        self.server, self.study, self.storage = server, study, storage
        host, port = server.server_address[:2]
        self.base = f"http://{host!s}:{port}"
        self.url = f"{self.base}/dashboard/studies/{study_id}"  # the study's own page, not the list of studies

    def serve_forever(self) -> None:
        try:
            self.server.serve_forever()
        finally:
            self.server.server_close()

    def shutdown(self) -> None:
        self.server.shutdown()


def open_dashboard(folder: Path, *, host: str = "127.0.0.1", port: int = 8080) -> Dashboard:
    """Bind optuna-dashboard to the study's storage; a missing study or a port in use is one line."""
    from tuning.tracking import require

    require("optuna_dashboard", "dashboard", "tuning dashboard")
    import optuna_dashboard

    from tuning.engines._storage import mask_password, open_storage
    from tuning.study import read_config

    config = read_config(Path(folder))
    storage = open_storage(config.storage, create=False)
    try:
        study_id = storage.get_study_id_from_name(config.name)
    except KeyError:
        raise StudyError(f"storage {mask_password(config.storage)}: holds no study named '{config.name}'") from None
    app = optuna_dashboard.wsgi(storage)
    try:
        server = make_server(host, port, app, server_class=_ThreadedServer, handler_class=_QuietHandler)
    except OSError as exc:
        raise StudyError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); pass another --port "
                         "(0 picks a free one)") from None
    return Dashboard(server, study=config.name, study_id=study_id, storage=mask_password(config.storage))
