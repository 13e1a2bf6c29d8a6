"""Errors that carry a message meant for the user.

Library code raises these; only ``tuning/cli.py`` turns them into ``click.ClickException`` so that every
entry point (CLI, tests, notebooks) sees the same typed failure.
"""

from __future__ import annotations


class ToolkitError(Exception):
    """A problem the user can fix; the message says what and how."""


class DataError(ToolkitError):
    """A dataset folder, image or cache is missing or unusable."""


class SpaceError(ToolkitError):
    """A search-space declaration is invalid; the message names the file and key."""


class UnknownNameError(ToolkitError):
    """A name (model, engine, budget, ...) is not among the known ones."""

    def __init__(self, kind: str, name: str, known: list[str] | tuple[str, ...]) -> None:
        super().__init__(f"unknown {kind} '{name}'; known: {', '.join(sorted(known))}")


class StudyError(ToolkitError):
    """A study folder or storage is missing, incomplete or inconsistent."""


class WeightsError(ToolkitError):
    """A pretrained backbone's weights file is missing, cannot be downloaded or does not fit the network."""
