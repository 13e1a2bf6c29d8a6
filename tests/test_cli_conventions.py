"""The command-line conventions users of other tools expect: ``predict --json`` as JSON lines, exit codes
stated in ``tuning --help`` (and kept), and click's shell completion for ``tuning``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from tuning.cli import cli

REPO = Path(__file__).resolve().parents[1]


def _tuning(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``tuning`` as the shell runs it (``python -m tuning`` from this checkout)."""
    return subprocess.run([sys.executable, "-m", "tuning", *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120, check=False)


def test_help_lists_the_exit_codes_and_each_one_holds() -> None:
    runner = CliRunner()
    out = runner.invoke(cli, ["--help"]).output
    assert "Exit codes:" in out
    assert "  0  success" in out
    assert "  1  error: one line 'Error: ...' says what is wrong and what to do" in out
    assert "  2  usage error: an unknown command or option, or a bad option value" in out
    assert runner.invoke(cli, ["spaces", "list"]).exit_code == 0
    failed = runner.invoke(cli, ["spaces", "show", "no-such-space"])
    assert failed.exit_code == 1 and failed.output.startswith("Error: ") and failed.output.count("\n") == 1
    assert runner.invoke(cli, ["search", "--no-such-option"]).exit_code == 2
    assert runner.invoke(cli, ["predict", "m.keras", "a.png", "--top-k", "0"]).exit_code == 2
    assert runner.invoke(cli, ["no-such-command"]).exit_code == 2


def test_bash_completion_script_and_completions() -> None:
    script = _tuning(env={"_TUNING_COMPLETE": "bash_source"})
    assert script.returncode == 0 and script.stdout.strip()
    assert "_tuning_completion()" in script.stdout
    assert "complete -o nosort -F _tuning_completion tuning" in script.stdout
    words = _tuning(env={"_TUNING_COMPLETE": "bash_complete", "COMP_WORDS": "tuning da", "COMP_CWORD": "1"})
    assert words.returncode == 0
    assert words.stdout.split() == ["plain,dashboard", "plain,data"]
    options = _tuning(env={"_TUNING_COMPLETE": "bash_complete", "COMP_WORDS": "tuning search --tens",
                           "COMP_CWORD": "2"})
    assert options.stdout.split() == ["plain,--tensorboard"]


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_other_shells_get_a_completion_script(shell: str) -> None:
    script = _tuning(env={"_TUNING_COMPLETE": f"{shell}_source"})
    assert script.returncode == 0 and "tuning" in script.stdout and len(script.stdout.splitlines()) > 3


def test_predict_json_writes_one_object_per_line(finished_study: Path, tmp_path: Path) -> None:
    model = finished_study / "export" / "model.keras"
    images = tmp_path / "images"
    images.mkdir()
    for i, colour in enumerate([(200, 20, 20), (20, 200, 20), (20, 20, 200)]):
        Image.new("RGB", (40, 30), colour).save(images / f"{i}.png")
    (images / "broken.jpg").write_bytes(b"not a jpeg")
    result = CliRunner().invoke(cli, ["predict", str(model), str(images), "--json", "--top-k", "2"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    rows = [json.loads(line) for line in lines]  # each line parses alone
    assert len(rows) == 4 and all(isinstance(r, dict) for r in rows)
    assert sorted(Path(r["file"]).name for r in rows) == ["0.png", "1.png", "2.png", "broken.jpg"]
    good = [r for r in rows if "top" in r]
    assert len(good) == 3 and all(len(r["top"]) == 2 for r in good)
    assert [Path(r["file"]).name for r in rows if "error" in r] == ["broken.jpg"]
