"""The public API as README shows it: its notebook example runs as written and prints what README says."""

from __future__ import annotations

import contextlib
import importlib
import io
import re
from pathlib import Path

import pytest

import tuning

README = Path(__file__).resolve().parent.parent / "README.md"


def _example() -> tuple[str, str]:
    """README's Python example and the output block printed below it."""
    section = README.read_text(encoding="utf-8").split("## From Python", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    shown = re.search(r"printed[^\n]*\n\n```\n(.*?)```", section, re.S)
    assert code and shown, "README's 'From Python' section lost its example or its output"
    return code.group(1), shown.group(1)


def test_every_public_name_resolves_to_what_it_says() -> None:
    for name in tuning.__all__:
        assert getattr(tuning, name) is not None, name
    inference = importlib.import_module("tuning.inference")  # a submodule import shadows no public name
    assert tuning.predict is inference.predict
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        _ = tuning.nothing


@pytest.mark.slow
def test_the_readme_notebook_example_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import keras

    code, shown = _example()
    monkeypatch.chdir(tmp_path)
    policy = keras.mixed_precision.global_policy().name
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    printed, expected = out.getvalue().splitlines(), shown.splitlines()
    assert len(printed) == len(expected)
    # the same fields in the same order; trained numbers may differ in their last digits across machines
    assert printed[0].split()[:2] == expected[0].split()[:2] and printed[0].split()[-2:] == expected[0].split()[-2:]
    # the class a 2-epoch model picks is chance; that it answers with a class and its probability is not
    assert printed[1].split(" [")[0] == expected[1].split(" [")[0]
    assert re.search(r"\[\{'class': '\w+', 'probability': 0\.\d+\}\]$", printed[1])
    assert (tmp_path / "runs" / "nb" / "report" / "index.html").is_file()
    assert keras.mixed_precision.global_policy().name == policy  # the caller's Keras settings are back
