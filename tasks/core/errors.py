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
