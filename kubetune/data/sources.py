"""Where training data comes from, read as a stream of batches of ``(where, payload)`` items.

``where`` names the file and line (``data.jsonl:12``) or row (``data.parquet:row 12``) for error messages;
``payload`` is a raw JSON line (bytes, parsed later in a worker) or an already decoded record (dict).

Sources: a local/PVC file (``.jsonl``, ``.jsonl.gz``, ``.json`` as an array or as JSON Lines, ``.parquet``),
a directory (saved with ``datasets.save_to_disk``, or holding such files), ``s3://bucket/key`` or
``s3://bucket/prefix/`` (downloaded first), ``hf://org/name[:split]`` (a Hugging Face hub dataset, streamed),
and the bundled sample ``kubetune://sample-chat``. Memory stays bounded: files are read a batch at a time.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubetune.errors import KubetuneError, Problem
from kubetune.runtime import resolve_data

Item = tuple[str, Any]
LINE_SUFFIXES = (".jsonl", ".jsonl.gz", ".json")
FILE_SUFFIXES = (*LINE_SUFFIXES, ".parquet")


@dataclass
class Source:
    """A readable dataset: ``batches()`` yields (items, progress advance) in ``unit``s out of ``total``."""

    name: str
    files: list[tuple[Path, str]]  # (local path, the name shown in messages)
    dataset: Any = None  # a datasets.Dataset / IterableDataset (save_to_disk directories, the hub)
    total: int | None = None
    unit: str = "B"

    def batches(self, size: int = 1000) -> Iterator[tuple[list[Item], int]]:
        if self.dataset is not None:
            yield from _dataset_batches(self.dataset, self.name, size)
            return
        for path, shown in self.files:
            if path.name.endswith(".parquet"):
                yield from _parquet_batches(path, shown, size)
            elif path.name.endswith(".json") and _starts_with(path, b"["):
                yield from _json_array_batches(path, shown, size)
            else:
                yield from _line_batches(path, shown, size)


def open_source(uri: str, workdir: str | Path) -> Source:
    """Resolve ``uri`` to a readable source; s3:// objects are downloaded into ``workdir`` first."""
    shown_root = uri
    if uri.startswith("s3://"):
        from kubetune.s3 import download

        path = download(uri, Path(workdir) / "download")
    elif uri.startswith("hf://"):
        return _hub(uri)
    else:
        path = Path(resolve_data(uri))
        shown_root = str(path)
    if path.is_file():
        if not path.name.endswith(FILE_SUFFIXES):
            raise KubetuneError(
                [Problem(shown_root, f"is not a data file (expected one of {', '.join(FILE_SUFFIXES)})")], "invalid data"
            )
        return Source(shown_root, [(path, shown_root)], total=path.stat().st_size)
    if path.is_dir():
        if any((path / marker).exists() for marker in ("dataset_info.json", "state.json", "dataset_dict.json")):
            return _saved_dataset(path, shown_root)
        files = sorted(
            p for p in path.rglob("*") if p.is_file() and p.name.endswith(FILE_SUFFIXES) and not p.name.startswith(".")
        )
        if not files:
            raise KubetuneError([Problem(shown_root, f"holds no data file ({', '.join(FILE_SUFFIXES)})")], "invalid data")
        shown = [(f, f"{shown_root.rstrip('/')}/{f.relative_to(path)}") for f in files]
        return Source(shown_root, shown, total=sum(f.stat().st_size for f in files))
    raise KubetuneError([Problem(shown_root, "does not exist")], "invalid data")


def _open(path: Path):
    return gzip.open(path, "rb") if path.name.endswith(".gz") else path.open("rb")


def _starts_with(path: Path, prefix: bytes) -> bool:
    with _open(path) as f:
        head = f.read(4096).lstrip()
    return head.startswith(prefix)


def _line_batches(path: Path, shown: str, size: int) -> Iterator[tuple[list[Item], int]]:
    batch, advance = [], 0
    with _open(path) as f:
        for lineno, line in enumerate(f, start=1):
            advance += len(line)
            if line.strip():
                batch.append((f"{shown}:{lineno}", line))
            if len(batch) >= size:
                yield batch, advance
                batch, advance = [], 0
    yield batch, advance


def _json_array_batches(path: Path, shown: str, size: int) -> Iterator[tuple[list[Item], int]]:
    """A JSON array file, element by element, each with the line it starts on (the array is read whole)."""
    text = _open(path).read().decode("utf-8", errors="replace")
    decoder, pos, line, scanned = json.JSONDecoder(), text.index("[") + 1, 1, 0
    batch, ws = [], re.compile(r"[\s,]*")
    while True:
        pos = ws.match(text, pos).end()
        if pos >= len(text) or text[pos] == "]":
            break
        line += text.count("\n", scanned, pos)
        scanned = pos
        try:
            value, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            where = f"{shown}:{text.count(chr(10), 0, e.pos) + 1}"
            raise KubetuneError([Problem(where, f"invalid JSON: {e.msg}")], f"invalid data in {shown}") from None
        batch.append((f"{shown}:{line}", value))
        if len(batch) >= size:
            yield batch, 0
            batch = []
    yield batch, len(text.encode("utf-8"))


def _parquet_batches(path: Path, shown: str, size: int) -> Iterator[tuple[list[Item], int]]:
    import pyarrow.parquet as pq

    row = 0
    parquet = pq.ParquetFile(path)
    per_row = path.stat().st_size / max(parquet.metadata.num_rows, 1)
    for record_batch in parquet.iter_batches(batch_size=size):
        rows = record_batch.to_pylist()
        yield [(f"{shown}:row {row + i + 1}", r) for i, r in enumerate(rows)], int(len(rows) * per_row)
        row += len(rows)


def _dataset_batches(dataset: Any, shown: str, size: int) -> Iterator[tuple[list[Item], int]]:
    row = 0
    for columns in dataset.iter(batch_size=size):
        names = list(columns)
        rows = [dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)]
        yield [(f"{shown}:row {row + i + 1}", r) for i, r in enumerate(rows)], len(rows)
        row += len(rows)


def _saved_dataset(path: Path, shown: str) -> Source:
    from datasets import DatasetDict, load_from_disk

    dataset = load_from_disk(str(path))
    if isinstance(dataset, DatasetDict):
        if "train" not in dataset:
            raise KubetuneError([Problem(shown, f"has splits {sorted(dataset)}, none named 'train'")], "invalid data")
        dataset = dataset["train"]
    return Source(shown, [], dataset=dataset, total=len(dataset), unit="rows")


def _hub(uri: str) -> Source:
    """``hf://org/name[:split]``: streamed from the Hugging Face hub (needs network and, maybe, HF_TOKEN)."""
    name, _, split = uri[len("hf://") :].partition(":")
    try:
        from datasets import load_dataset

        dataset = load_dataset(name, split=split or "train", streaming=True)
    except Exception as e:  # offline, unknown dataset, gated without a token: all end here
        raise KubetuneError([Problem(uri, f"cannot be loaded from the Hugging Face hub: {e}")], "invalid data") from None
    return Source(uri, [], dataset=dataset, unit="rows")
