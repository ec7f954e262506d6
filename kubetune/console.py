"""Lines for the step's log, as a person reads it in the KFP UI or ``kubectl logs``."""

from __future__ import annotations


def say(line: str) -> None:
    """``line`` in one write, flushed: a monitor thread's lines and the step's own never share a line."""
    print(f"{line}\n", end="", flush=True)
