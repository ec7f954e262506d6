"""One error type for every mistake in a user's input: it carries all problems found, each with a place."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One mistake: ``where`` is a field (``validation_split``) or a place in a file (``spec.json:12``)."""

    where: str
    message: str
    hint: str | None = None

    def __str__(self) -> str:
        text = f"{self.where}: {self.message}"
        return f"{text} ({self.hint})" if self.hint else text


class KubetuneError(Exception):
    """Raised with every problem found, so the user can fix them all in one go."""

    def __init__(self, problems: list[Problem], title: str = "invalid input"):
        self.problems = list(problems)
        self.title = title
        super().__init__(self.report())

    def report(self) -> str:
        lines = [f"{self.title}: {len(self.problems)} problem(s)"]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


@contextmanager
def reported():
    """For a pipeline step: a mistake in the user's input ends the step with its report, not a traceback."""
    try:
        yield
    except KubetuneError as error:
        print(error.report(), file=sys.stderr, flush=True)
        raise SystemExit(2) from None
