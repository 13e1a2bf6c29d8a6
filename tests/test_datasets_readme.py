"""datasets/README.md is where a person learns what the manifest's columns mean, so it must keep up with them."""

from __future__ import annotations

import re
from pathlib import Path

from tuning.data.manifest import MANIFEST_COLUMNS

README = Path(__file__).resolve().parents[1] / "datasets" / "README.md"


def test_the_readme_explains_every_manifest_column_in_order() -> None:
    rows = re.findall(r"^\| `([a-z_0-9]+)` \| (.+?) \|$", README.read_text(encoding="utf-8"), flags=re.MULTILINE)
    assert tuple(name for name, _ in rows) == MANIFEST_COLUMNS
    assert all(len(meaning.split()) >= 3 for _, meaning in rows)  # a line of meaning, not a placeholder
