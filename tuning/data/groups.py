"""Source groups: which images came from one show, person or session, so a split keeps them on one side.

Frames of one TV show on both sides of a split let a model score on memory: 0.787 reported, 0.719 on shows it
never saw. A rule (``--group-by``) names each raw file's group, stored in the manifest's ``source_group``
column; ``splits.union_groups`` merges it with the near-duplicate ``group``, and every split keeps the union
together. Group names are shared across classes: ``raw/happy/anna/`` and ``raw/sad/anna/`` are one person.

Rules, applied to the path below the class folder (``raw/<class>/<rel>``):

- ``folder``: the first sub-folder of ``rel`` (``raw/Action/Friends/e01.jpg`` -> ``Friends``);
- ``regex:PATTERN``: ``re.search`` on ``rel``; its first group, or the whole match, names the group;
- ``csv:FILE``: a table with the columns ``path,group``; a path is ``raw/<class>/<rel>`` or ``<class>/<rel>``
  (the same as relative to an import's source folder);
- ``none``: clear the source groups (only near duplicates are kept together again).

A file the rule does not group is counted with its reason and stays a group of its own; a rule that groups
nothing is an error, never a silent no-op.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tuning.errors import DataError

RULES = ("folder", "regex:PATTERN", "csv:FILE", "none")
NO_SUBFOLDER = "directly in its class folder (no sub-folder to group by)"
NO_MATCH = "the --group-by pattern does not match its path"
EMPTY_MATCH = "the --group-by pattern matched an empty group name"
NOT_LISTED = "not listed in the --group-by csv"


@dataclass(frozen=True)
class GroupRule:
    """A parsed ``--group-by`` value; ``table`` maps a path below raw/ (``<class>/<rel>``) to its group."""

    spec: str
    kind: str
    pattern: re.Pattern[str] | None = None
    table: dict[str, str] = field(default_factory=dict)
    source: Path | None = None


@dataclass
class GroupingReport:
    """What a rule did: files grouped, distinct groups, files it left alone (with why) and CSV paths that name
    no file of the dataset."""

    spec: str
    grouped: int = 0
    groups: int = 0
    ungrouped: list[tuple[str, str]] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)

    def reasons(self) -> Counter[str]:
        counts = Counter(reason for _, reason in self.ungrouped)
        if self.unknown:
            counts["csv row names no file of the dataset"] = len(self.unknown)
        return counts


def parse_group_by(spec: str, *, option: str = "--group-by") -> GroupRule:
    """Check a ``--group-by`` value where it enters: a bad regex or an unreadable CSV fails before any work."""
    spec = spec.strip()
    if spec in ("folder", "none"):
        return GroupRule(spec, spec)
    if spec.startswith("regex:"):
        text = spec.removeprefix("regex:")
        if not text:
            raise DataError(f"{option} regex: needs a pattern, e.g. regex:'^([^_]+)_' (the part before '_')")
        try:
            pattern = re.compile(text)
        except re.error as exc:
            raise DataError(f"{option} {spec}: not a regular expression ({exc}); fix the pattern") from None
        return GroupRule(spec, "regex", pattern=pattern)
    if spec.startswith("csv:"):
        path = Path(spec.removeprefix("csv:"))
        return GroupRule(spec, "csv", table=_read_table(path, option), source=path)
    raise DataError(f"{option}: unknown rule '{spec}'; known: {', '.join(RULES)}")


def _key(path: str) -> str:
    """A CSV path as ``<class>/<rel>``: ``raw/`` and ``./`` in front and Windows separators are accepted."""
    path = path.strip().replace("\\", "/")
    while path.startswith("./"):
        path = path[2:]
    return path.removeprefix("raw/")


def _read_table(path: Path, option: str) -> dict[str, str]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = [c.strip() for c in reader.fieldnames or []]
            if "path" not in columns or "group" not in columns:
                raise DataError(f"{option} csv:{path}: needs a header with the columns path,group (found: "
                                f"{','.join(columns) or 'nothing'}); add that first line")
            reader.fieldnames = columns
            table: dict[str, str] = {}
            for line, row in enumerate(reader, start=2):
                rel, group = _key(row.get("path") or ""), (row.get("group") or "").strip()
                if not rel or not group:
                    raise DataError(f"{option} csv:{path} line {line}: needs both a path and a group; fill it in "
                                    "or delete the line")
                if table.get(rel, group) != group:
                    raise DataError(f"{option} csv:{path} line {line}: {rel} is listed again with another group "
                                    f"('{table[rel]}', then '{group}'); keep one")
                table[rel] = group
    except FileNotFoundError:
        raise DataError(f"{option} csv:{path}: no such file; give a CSV with the columns path,group") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{option} csv:{path}: cannot be read ({getattr(exc, 'strerror', None) or exc}); "
                        "save it as UTF-8 CSV with the columns path,group") from None
    if not table:
        raise DataError(f"{option} csv:{path}: no rows below the header; add one line path,group per file")
    return table


def group_of(rule: GroupRule, path: str) -> tuple[str, str]:
    """(group, "") for a manifest path ``raw/<class>/<rel>``, or ("", why the rule leaves it ungrouped)."""
    below_raw = path.removeprefix("raw/")
    parts = below_raw.split("/", 1)
    rel = parts[1] if len(parts) == 2 else below_raw
    if rule.kind == "folder":
        return (rel.split("/", 1)[0], "") if "/" in rel else ("", NO_SUBFOLDER)
    if rule.kind == "regex":
        assert rule.pattern is not None
        match = rule.pattern.search(rel)
        if match is None:
            return "", NO_MATCH
        name = match.group(1) if rule.pattern.groups else match.group(0)
        return (name, "") if name else ("", EMPTY_MATCH)
    if rule.kind == "csv":
        name = rule.table.get(below_raw, "")
        return (name, "") if name else ("", NOT_LISTED)
    return "", ""  # none: clears


def apply_groups(rows: list[dict[str, str]], rule: GroupRule) -> GroupingReport:
    """Set every row's ``source_group`` by ``rule`` (in place); an error when the rule groups no file at all.

    Every row is relabelled, so running a new rule replaces the old one completely (``none`` clears).
    """
    report = GroupingReport(rule.spec)
    names: set[str] = set()
    for row in rows:
        name, why = group_of(rule, row["path"])
        row["source_group"] = name
        if name:
            report.grouped += 1
            names.add(name)
        elif why:
            report.ungrouped.append((row["path"], why))
    report.groups = len(names)
    if rule.kind == "csv":
        known = {r["path"].removeprefix("raw/") for r in rows}
        report.unknown = sorted(p for p in rule.table if p not in known)
    if rule.kind != "none" and rows and not report.grouped:
        example = rows[0]["path"]
        why = report.ungrouped[0][1] if report.ungrouped else "no file matched"
        raise DataError(f"--group-by {rule.spec}: groups none of the {len(rows)} files (e.g. {example}: {why}); "
                        f"check the rule against the paths below raw/<class>/ (known rules: {', '.join(RULES)})")
    return report
