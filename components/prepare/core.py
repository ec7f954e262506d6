"""Data preparation: check every line of a chat JSONL file, then split train/validation deterministically.

Every bad line is reported with its file, line number and reason. With ``on_invalid="fail"`` (default)
nothing is written when any line is bad; with ``"skip"`` bad lines are dropped and listed in the report.
Outputs are written to temporary files and renamed into place, so a failure never leaves half a file.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from kubetune.errors import KubetuneError, Problem
from kubetune.runtime import resolve_data

ROLES = {"system", "user", "assistant", "tool"}


@dataclass
class PrepareReport:
    source: str
    total_lines: int = 0
    train_samples: int = 0
    validation_samples: int = 0
    skipped: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_sample(sample: Any) -> str | None:
    """Why a parsed line is not a usable chat sample, or None when it is."""
    if not isinstance(sample, dict):
        return "a line must be a JSON object"
    messages = sample.get("messages")
    if not isinstance(messages, list) or not messages:
        return "`messages` must be a non-empty list"
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            return f"messages[{i}] must be an object"
        if message.get("role") not in ROLES:
            return f"messages[{i}].role must be one of {', '.join(sorted(ROLES))}, got {message.get('role')!r}"
        content = message.get("content")
        if not isinstance(content, str) or not content.strip():
            return f"messages[{i}].content must be a non-empty string"
    if not any(m["role"] == "assistant" for m in messages):
        return "no assistant turn to learn from"
    return None


def read_samples(path: Path, on_invalid: Literal["fail", "skip"], report: PrepareReport) -> list[dict]:
    samples, problems = [], []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            report.total_lines += 1
            try:
                sample = json.loads(line)
                reason = check_sample(sample)
            except json.JSONDecodeError as e:
                reason = f"invalid JSON: {e.msg} (column {e.colno})"
            if reason is None:
                samples.append(sample)
            else:
                problems.append(Problem(f"{path}:{lineno}", reason))
                report.skipped.append({"line": lineno, "reason": reason})
    if problems and on_invalid == "fail":
        raise KubetuneError(problems, f"invalid data in {path}")
    if not samples:
        raise KubetuneError([Problem(str(path), "holds no usable sample")], "invalid data")
    return samples


def split(samples: list[dict], validation_ratio: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Deterministic split: the same samples, ratio and seed always give the same two sets."""
    order = list(range(len(samples)))
    random.Random(seed).shuffle(order)
    n_val = round(len(samples) * validation_ratio)
    if validation_ratio > 0 and len(samples) > 1:
        n_val = min(max(n_val, 1), len(samples) - 1)
    val_idx = set(order[:n_val])
    train = [s for i, s in enumerate(samples) if i not in val_idx]
    val = [s for i, s in enumerate(samples) if i in val_idx]
    return train, val


def write_jsonl_atomic(path: str | Path, rows: list[dict]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def prepare(
    data_uri: str,
    train_path: str | Path,
    validation_path: str | Path,
    validation_ratio: float = 0.1,
    seed: int = 42,
    on_invalid: Literal["fail", "skip"] = "fail",
) -> PrepareReport:
    if not 0 <= validation_ratio < 1:
        raise KubetuneError([Problem("validation_ratio", "must be in [0, 1)")], "invalid parameters")
    source = Path(resolve_data(data_uri))
    if not source.is_file():
        raise KubetuneError([Problem(str(source), "does not exist or is not a file")], "invalid data")
    report = PrepareReport(source=str(source))
    samples = read_samples(source, on_invalid, report)
    train, val = split(samples, validation_ratio, seed)
    write_jsonl_atomic(train_path, train)
    write_jsonl_atomic(validation_path, val)
    report.train_samples, report.validation_samples = len(train), len(val)
    return report
