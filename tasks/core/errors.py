"""The one exception users see: what is wrong, and how to fix it."""

from __future__ import annotations


class InputError(ValueError):
    """Bad input or configuration. Never retried; the CLI prints it as one line and exits 2."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(f"{problem} — {fix}")
        self.problem = problem
        self.fix = fix

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        # Keeps the two parts when Prefect copies the exception across a state.
        return (type(self), (self.problem, self.fix))


def shown(value: object, limit: int = 80) -> str:
    """A value from the user's data or from a file (an id, a column name, a lock file's host), fit for a message:
    every character that is not printable (ANSI escape codes, newlines, bidirectional overrides) written as its
    Python escape, then cut to `limit` characters."""
    text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in str(value))
    return text if len(text) <= limit else text[: limit - 1] + "…"
