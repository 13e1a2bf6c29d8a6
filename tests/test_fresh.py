"""``call_in_fresh_process``: a value back, or the child's error with its class and message."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuning._fresh import call_in_fresh_process
from tuning.data.manifest import raw_dir
from tuning.errors import DataError, ToolkitError, UnknownNameError
from tuning.export import parse_formats


def test_the_childs_value_comes_back() -> None:
    assert call_in_fresh_process(parse_formats, "onnx,keras,onnx") == ["onnx", "keras"]


def test_the_childs_error_keeps_its_class_and_message(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as raised:
        call_in_fresh_process(raw_dir, missing)
    assert str(raised.value).startswith(f"{missing}: no such dataset folder")
    with pytest.raises(ToolkitError) as unknown:  # its class takes no plain message: a ToolkitError, same words
        call_in_fresh_process(parse_formats, "keras,pt")
    assert not isinstance(unknown.value, UnknownNameError)
    assert str(unknown.value) == "unknown export format 'pt'; known: keras, onnx, savedmodel, tflite"
