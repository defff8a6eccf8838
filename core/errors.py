"""Errors the CLI turns into one readable line and an exit code.

``UsageError`` (exit 2) is for input the user can fix: an unknown name, a bad config value, a folder
that is not a run. ``ZooError`` (exit 1) is a runtime failure with a readable message.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ZooError(Exception):
    """A runtime failure; the CLI prints the message and exits 1."""

    exit_code = 1


class UsageError(ZooError):
    """Bad input (name, config, path, flag); the CLI prints the message and exits 2."""

    exit_code = 2


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """Return `` (did you mean X?)`` for the closest candidate, or an empty string."""
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.5)
    return f" (did you mean {close[0]}?)" if close else ""


def check_choice(name: str, value: str, choices: Iterable[str]) -> None:
    """Raise a one-line :class:`UsageError` unless ``value`` is one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        raise UsageError(
            f"{name} must be one of {', '.join(choices)}; got {value!r}{did_you_mean(value, choices)}"
        )
