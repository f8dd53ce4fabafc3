"""The one exception users see: what is wrong, and how to fix it."""

from __future__ import annotations

from typing import Any

SHOWN_CHARACTERS = 60  # a value a user gave appears in a message cut to this many characters


class InputError(ValueError):
    """Bad input or configuration. Never retried; the CLI prints it as one line and exits 2."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(f"{problem} — {fix}")
        self.problem = problem
        self.fix = fix

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        # Keeps the two parts when Prefect copies the exception across a state.
        return (type(self), (self.problem, self.fix))


class TooShortError(InputError):
    """A series too short for a test split and windows of its own. One network across a panel still forecasts
    it from a padded window (the run publishes that forecast, unscored); a model of its own cannot."""


class ConstantSeriesError(InputError):
    """A series whose training part is constant: a model of its own has nothing to learn. One network across a
    panel still forecasts it, unscored, as it does a series too short (a discontinued product's zeros, a new
    one's before its launch)."""


def shown(value: object, limit: int = 80) -> str:
    """A value from the user's data or from a file (an id, a column name, a lock file's host), fit for a message:
    every character that is not printable (ANSI escape codes, newlines, bidirectional overrides) written as its
    Python escape, then cut to `limit` characters."""
    text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in str(value))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def quoted(value: Any, limit: int = SHOWN_CHARACTERS) -> str:
    """A value a user gave, as a message may show it: a string quoted with its unprintable characters escaped
    and cut to `limit` characters, a number the same way, anything else by its type and size only (a nested
    value is never printed: it can be huge, or expand without bound)."""
    if isinstance(value, str):
        return repr(value[:limit]) + (f"… ({len(value):,} characters)" if len(value) > limit else "")
    if value is None or isinstance(value, bool | int | float):
        try:
            text = repr(value)
        except ValueError:  # an int too long to print
            return "a number too long to print"
        return text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} digits)"
    try:
        size = f" of {len(value):,} item{'' if len(value) == 1 else 's'}"
    except TypeError:
        size = ""
    return f"a {type(value).__name__}{size}"
