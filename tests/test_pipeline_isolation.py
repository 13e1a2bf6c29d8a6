"""A search whose trials train in worker processes holds no training runtime itself: its process never imports
TensorFlow or a Keras backend, from the first (cache-building) run to the exported model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = '''
import json, sys
from pathlib import Path

from tuning.pipeline import SearchRequest, run_search


def main():
    data, space, runs = map(Path, sys.argv[1:4])
    request = SearchRequest(model="alexnet", data=data, space=str(space), budget="quick", trials=2, epochs=1,
                            study="isolated", runs=runs, seed=0, pruner="none", trials_per_process=5,
                            precision="float32")
    outcome = run_search(request, on_event=lambda event: None)
    loaded = [m for m in ("tensorflow", "keras", "jax", "torch") if m in sys.modules]
    print(json.dumps({"model": str(outcome.model), "report": str(outcome.report), "loaded": loaded,
                      "complete": outcome.counts.get("complete", 0)}))


if __name__ == "__main__":  # the children are spawned, and import this file again
    main()
'''


@pytest.mark.slow
def test_the_coordinating_process_never_imports_tensorflow_or_keras(tmp_path: Path,
                                                                    tiny_space: Callable[[str], Path]) -> None:
    from tuning.data.demo import make_demo

    data = tmp_path / "fresh"
    make_demo(data / "raw", per_class=12, size=32, seed=0)  # no cache yet: the first run builds it
    script = tmp_path / "search.py"
    script.write_text(SCRIPT, encoding="utf-8")
    done = subprocess.run([sys.executable, str(script), str(data), str(tiny_space("alexnet")), str(tmp_path / "runs")],
                          cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3"),
                          capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["loaded"] == []
    assert result["complete"] == 2
    assert Path(result["model"]).is_file() and Path(result["report"]).is_file()  # retrained, reported, exported
    assert (data / "cache" / "32px.npz").is_file()
    assert (tmp_path / "runs" / "isolated" / "final" / "metrics.json").is_file()
