"""User-facing errors.

A `LifecostError` is a mistake in what the user gave us (a name, a file, a number). The CLI and
the Streamlit app print it as one line and exit with code 2 — never a traceback. Every message
names the field (or file/row) and says how to fix it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class LifecostError(Exception):
    """One-line, user-facing error. `field` names what was wrong; `fix` says what to do."""

    def __init__(self, message: str, *, field: str | None = None, fix: str | None = None):
        self.field = field
        self.fix = fix
        text = f"{field}: {message}" if field else message
        if fix:
            text = f"{text} — {fix}"
        super().__init__(text)


def suggest(name: str, choices: Iterable[str]) -> str:
    """A 'did you mean …?' hint for an unknown name (case-insensitive closest matches)."""
    choices = list(choices)
    lowered = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=3, cutoff=0.4)
    if close:
        return "did you mean " + " or ".join(repr(lowered[c]) for c in close) + "?"
    return "known: " + ", ".join(sorted(choices))


def unknown_name(kind: str, name: str, choices: Iterable[str]) -> LifecostError:
    """Error for an unknown catalog name, with the nearest matches."""
    return LifecostError(f"unknown {kind} {name!r}", field=kind, fix=suggest(name, choices))
