"""The study folder: config.toml written with tomli-w and read back exactly, paths relative to the folder (a
study opened from elsewhere, or moved, finds its own storage), unreadable configs and foreign folders refused."""

from __future__ import annotations

import math
import os
import shutil
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import pytest
from click.testing import CliRunner

from tuning.cli import cli
from tuning.errors import StudyError
from tuning.study import StudyConfig, check_study_folder, read_config, write_config


@contextmanager
def _cwd(path: Path) -> Iterator[None]:
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def _config(folder: Path, **changes: object) -> StudyConfig:
    values: dict = dict(
        name=folder.name, model="alexnet", dataset=str(folder.parent / "data"), engine="optuna", sampler="tpe",
        pruner="median", budget="quick", trials=2, epochs=1, seed=0,
        storage=f"journal:{(folder / 'optuna.journal').as_posix()}", space={"model": "alexnet"},
    )
    values.update(changes)
    return StudyConfig(**values)


# ----- config.toml through tomli-w ---------------------------------------------------------------------------
def test_every_config_value_type_round_trips(tmp_path: Path) -> None:
    """Strings that need escaping, ints, floats incl. nan and +-inf, booleans, lists, nested and empty tables,
    keys that need quoting: what a config can hold comes back as it went in."""
    folder = tmp_path / "s"
    space = {
        "model": "alexnet",
        "base": {"learning_rate": 1e-4, "dropout": 0.0, "augmentation": 'say "hi"\\ \n\tünïcode', "epochs": 3,
                 "flag": True, "off": False, "big": 2**40, "neg": -7, "tiny": 5e-324},
        "params": {"x": {"type": "float", "low": -math.inf, "high": math.inf, "grid": [1e-2, 1e-3, math.nan],
                         "when": {"optimizer": ["sgd", "adam"]}}},
        "augmentation": {"none": {}},
        "budgets": {"quick": {"trials": 2, "fixed": {}}},
        "odd keys": {"a.b": 1, "": "empty key", "ключ": [[1, 2], ["a"]]},
    }
    config = _config(folder, space=space, runtime={"precision": "float32", "inter_op_threads": 1},
                     versions={"keras": "3.0"}, dataset_sha256="ab" * 32)
    write_config(folder, config)
    back = read_config(folder)
    assert math.isnan(back.space["params"]["x"]["grid"][2])
    back.space["params"]["x"]["grid"][2] = config.space["params"]["x"]["grid"][2] = 0.0
    assert asdict(back) == asdict(config)
    assert tomllib.loads((folder / "config.toml").read_text())["paths_relative_to"] == "study folder"


def test_paths_inside_the_folder_are_written_relative_and_read_absolute(tmp_path: Path) -> None:
    folder = tmp_path / "runs" / "s"
    for storage, written in [
        (f"journal:{(folder / 'optuna.journal').as_posix()}", "journal:optuna.journal"),
        (f"sqlite:///{(folder / 'db' / 'study.db').as_posix()}?timeout=5", "sqlite:///db/study.db?timeout=5"),
        (f"sqlite:///{(tmp_path / 'shared.db').as_posix()}", f"sqlite:///{(tmp_path / 'shared.db').as_posix()}"),
        ("postgresql+psycopg://me:pw@db.example/optuna", "postgresql+psycopg://me:pw@db.example/optuna"),
    ]:
        write_config(folder, _config(folder, storage=storage, dataset=str(tmp_path / "datasets" / "demo")))
        on_disk = tomllib.loads((folder / "config.toml").read_text())
        assert (on_disk["storage"], on_disk["dataset"]) == (written, "../../datasets/demo")
        back = read_config(folder)
        assert (back.storage, back.dataset) == (storage, (tmp_path / "datasets" / "demo").as_posix())


def test_a_config_from_before_relative_paths_is_read_against_the_working_directory(tmp_path: Path) -> None:
    """Older studies stored paths relative to where the search ran; they still open from there."""
    folder = tmp_path / "runs" / "old"
    folder.mkdir(parents=True)
    import tomli_w

    data = asdict(_config(folder, storage="journal:runs/old/optuna.journal", dataset="datasets/demo"))
    del data["dataset_sha256"]
    (folder / "config.toml").write_text(tomli_w.dumps(data))
    with _cwd(tmp_path):
        config = read_config(Path("runs/old"))
    assert config.storage == f"journal:{(folder / 'optuna.journal').as_posix()}"
    assert config.dataset == (tmp_path / "datasets" / "demo").as_posix() and config.dataset_sha256 == ""


@pytest.mark.parametrize(("text", "why"), [
    ("name = \n", "not valid TOML: Invalid value (at line 1, column 8)"),
    ("[space\n", "not valid TOML: Expected ']' at the end of a table declaration (at line 1, column 7)"),
    ('name = "x"\n', "missing key 'model'"),
    (None, "unknown key 'colour'"),
    (b"\xff\xfe", "not valid TOML: 'utf-8' codec can't decode byte 0xff in position 0: invalid start byte"),
])
def test_a_corrupt_config_is_one_line(tmp_path: Path, text: str | bytes | None, why: str) -> None:
    folder = tmp_path / "s"
    folder.mkdir()
    path = folder / "config.toml"
    if text is None:
        write_config(folder, _config(folder))
        path.write_text('colour = "red"\n' + path.read_text())
    elif isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    result = CliRunner().invoke(cli, ["report", "--study", str(folder)])
    assert result.exit_code == 1
    assert result.output == (f"Error: {path}: not a readable study config ({why}); restore it from a copy, or "
                             "start a new study with --study NEW_NAME\n")


def test_only_new_empty_or_study_folders_take_a_study(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    check_study_folder(runs / "new", runs=runs)
    (runs / "empty").mkdir(parents=True)
    check_study_folder(runs / "empty", runs=runs)
    check_study_folder(tmp_path / "elsewhere" / "new", runs=runs)  # outside runs/, but nothing there to lose
    write_config(runs / "study", _config(runs / "study"))
    check_study_folder(runs / "study", runs=runs)
    (runs / "notes").mkdir()
    (runs / "notes" / "todo.txt").write_text("mine")
    with pytest.raises(StudyError, match=r"runs/notes holds files that are not a study's"):
        check_study_folder(runs / "notes", runs=runs)
    (tmp_path / "config.toml").write_text('title = "my own settings"\n')
    with pytest.raises(StudyError, match=r"\(outside .*/runs/\) holds files that are not a study's"):
        check_study_folder(runs / "..", runs=runs)


def test_search_study_dotdot_never_overwrites_the_users_config(
    tiny_dataset: Path, tiny_space: Callable[[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``tuning search --study ..`` used to write the study's config.toml over ./config.toml."""
    monkeypatch.chdir(tmp_path)
    mine = 'title = "my own settings"\n'
    (tmp_path / "config.toml").write_text(mine)
    result = CliRunner().invoke(cli, ["search", "--model", "alexnet", "--data", str(tiny_dataset), "--space",
                                      str(tiny_space("alexnet")), "--study", ".."])
    assert result.exit_code == 1
    assert result.output == (f"Error: --study: {tmp_path} (outside runs/) holds files that are not a study's; "
                             "pass a new name (a study lives in runs/NAME) or an empty folder\n")
    assert (tmp_path / "config.toml").read_text() == mine
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"]


# ----- a real study opened from elsewhere, moved and copied --------------------------------------------------
@pytest.fixture(scope="module")
def project(tiny_dataset: Path, tiny_space: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory
            ) -> Path:
    """A project folder (datasets/tiny, runs/rel) whose one-trial study was searched with relative paths, as
    ``tuning search`` from the project root does by default."""
    from tuning.pipeline import SearchRequest, run_search

    root = tmp_path_factory.mktemp("project")
    shutil.copytree(tiny_dataset, root / "datasets" / "tiny")
    with _cwd(root):
        run_search(SearchRequest(model="alexnet", data=Path("datasets/tiny"), space=str(tiny_space("alexnet")),
                                 budget="quick", trials=1, epochs=1, study="rel", seed=2, pruner="none"))
    return root


def _report_lists_the_trial(folder: Path) -> None:
    page = (folder / "report" / "index.html").read_text()
    assert "No trial completed" not in page
    assert "<tr><td>0</td><td>complete</td>" in page.split("Trials, best first")[1]


@pytest.mark.slow
def test_config_on_disk_names_paths_relative_to_the_folder(project: Path) -> None:
    on_disk = tomllib.loads((project / "runs" / "rel" / "config.toml").read_text())
    assert on_disk["storage"] == "journal:optuna.journal"
    assert on_disk["dataset"] == "../../datasets/tiny"


@pytest.mark.slow
def test_report_with_an_absolute_study_path_from_another_directory(project: Path, tmp_path: Path) -> None:
    """It used to open a journal relative to the working directory, create it empty and report no trials."""
    folder = project / "runs" / "rel"
    with _cwd(tmp_path):
        result = CliRunner().invoke(cli, ["report", "--study", str(folder)])
    assert result.exit_code == 0, result.output
    assert result.output == f"Report: {folder / 'report' / 'index.html'}\n"
    _report_lists_the_trial(folder)
    assert list(tmp_path.iterdir()) == []  # no stray journal or runs/ created where the command ran


def test_a_copied_study_folder_reports_and_exports_with_the_original_gone(project: Path, tmp_path: Path) -> None:
    original = project / "runs" / "rel"
    copy = tmp_path / "elsewhere" / "rel"
    shutil.copytree(original, copy)
    hidden = original.with_name("rel-hidden")
    original.rename(hidden)
    try:
        with _cwd(tmp_path):
            report = CliRunner().invoke(cli, ["report", "--study", str(copy)])
            export = CliRunner().invoke(cli, ["export", "--study", str(copy)])
    finally:
        hidden.rename(original)
    assert report.exit_code == 0, report.output
    _report_lists_the_trial(copy)
    assert export.exit_code == 0, export.output
    assert (copy / "export" / "model.keras").stat().st_size > 1000
    assert read_config(copy).storage == f"journal:{(copy / 'optuna.journal').as_posix()}"


@pytest.mark.slow
def test_a_moved_project_retrains_its_study(project: Path, tmp_path: Path) -> None:
    """Moved whole (datasets and runs together), the study still finds its images and retrains."""
    moved = tmp_path / "moved"
    shutil.copytree(project, moved)
    hidden = project.with_name(project.name + "-hidden")
    project.rename(hidden)
    try:
        with _cwd(tmp_path):
            result = CliRunner().invoke(cli, ["retrain", "--study", str(moved / "runs" / "rel")])
    finally:
        hidden.rename(project)
    assert result.exit_code == 0, result.output
    assert (moved / "runs" / "rel" / "final" / "metrics.json").exists()
    assert read_config(moved / "runs" / "rel").dataset == (moved / "datasets" / "tiny").as_posix()


def test_a_study_folder_without_its_journal_is_refused_not_recreated(project: Path, tmp_path: Path) -> None:
    copy = tmp_path / "partial"
    shutil.copytree(project / "runs" / "rel", copy)
    (copy / "optuna.journal").unlink()
    result = CliRunner().invoke(cli, ["report", "--study", str(copy)])
    assert result.exit_code == 1
    assert result.output == (f"Error: storage journal:{(copy / 'optuna.journal').as_posix()}: no such journal "
                             "file; the study's trials are not there (was the folder copied without "
                             "optuna.journal?)\n")
    assert not (copy / "optuna.journal").exists()
