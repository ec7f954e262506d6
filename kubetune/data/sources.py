"""Where training data comes from, read as a stream of batches of ``(where, payload)`` items.

``where`` names the file and line (``data.jsonl:12``) or row (``data.parquet:row 12``) for error messages;
``payload`` is a raw JSON line (bytes, parsed later in a worker) or an already decoded record (dict).

Sources: a local/PVC file (``.jsonl``, ``.jsonl.gz``, ``.json`` as an array or as JSON Lines, ``.parquet``),
a directory (saved with ``datasets.save_to_disk``, or holding such files), ``s3://bucket/key`` or
``s3://bucket/prefix/`` (downloaded first), ``hf://org/name[:split]`` (a Hugging Face hub dataset, streamed),
and the bundled sample ``kubetune://sample-chat``. Memory stays bounded: files are read a batch at a time,
a line at most ``MAX_RECORD_BYTES`` at a time (a longer record is refused without being held whole), and a
``.json`` array file, which is read whole, may hold at most ``MAX_JSON_ARRAY_BYTES``. Every failure to read
(a missing or unreadable file, a truncated or non-gzip ``.gz``, a corrupt Parquet file) is a ``KubetuneError``
naming the file, and the line or row where it applies.
"""

from __future__ import annotations

import gzip
import json
import re
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from kubetune.data.records import BadRecord
from kubetune.errors import KubetuneError, Problem
from kubetune.runtime import SAMPLE_DATA_URI, resolve_data
from kubetune.s3 import CREDENTIALS_HINT, NO_QUERY, NO_USERINFO, download, has_userinfo, public_uri, url_scheme

Item = tuple[str, Any]  # payload: JSON text (bytes or str), a decoded record (dict), or a BadRecord found while reading
MAX_RECORD_BYTES = 16 * 2**20  # one record's text (a line, an array element, a Parquet row): larger ones are refused
MAX_BATCH_BYTES = 32 * 2**20  # a batch handed to a worker holds at most about this much text
MAX_JSON_ARRAY_BYTES = 256 * 2**20  # a .json array file is read whole: larger ones must be JSON Lines
LINE_SUFFIXES = (".jsonl", ".jsonl.gz", ".json")
FILE_SUFFIXES = (*LINE_SUFFIXES, ".parquet")
SUPPORTED = "a local file or directory, s3://bucket/key, hf://org/name[:split] or kubetune://sample-chat"


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
            elif path.name.endswith(".json") and _starts_with(path, shown, b"["):
                yield from _json_array_batches(path, shown, size)
            else:
                yield from _line_batches(path, shown, size)


def check_source(uri: str, what: str = "data") -> None:
    """Refuse, before anything runs, a local path that does not exist, a URL kubetune does not read, or one that
    carries a credential (a user or password) or, for s3://, a query: shown without its user, password or query."""
    scheme = url_scheme(uri)
    if scheme is None and not Path(uri).exists():
        raise KubetuneError([Problem(uri, "does not exist")], f"invalid {what}")
    if scheme is None or uri == SAMPLE_DATA_URI:
        return
    where, problem = public_uri(uri), None
    if scheme == "kubetune":
        problem = Problem(where, f"is not a bundled data set (the one there is: {SAMPLE_DATA_URI})")
    elif scheme not in ("s3", "hf") or "://" not in uri:
        problem = Problem(where, f"is a {scheme}:// URL, which kubetune does not read", f"give {SUPPORTED}")
    elif has_userinfo(uri):
        problem = Problem(where, NO_USERINFO, CREDENTIALS_HINT)
    elif scheme == "s3" and ("?" in uri or "#" in uri):
        problem = Problem(where, NO_QUERY)
    elif scheme == "hf" and not re.fullmatch(r"hf://[\w.-]+(/[\w.-]+)?(:[^/?#\s]+)?", uri):
        problem = Problem(where, "is not a hub dataset (expected hf://org/name or hf://org/name:split)")
    if problem:
        raise KubetuneError([problem], f"invalid {what}")


def open_source(uri: str, workdir: str | Path) -> Source:
    """Resolve ``uri`` to a readable source; s3:// objects are downloaded into ``workdir`` first."""
    shown_root = uri
    if uri.startswith("s3://"):
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
    if path.exists() and not path.is_dir():
        raise KubetuneError([Problem(shown_root, "is not a regular file or a directory")], "invalid data")
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


@contextmanager
def _reading(path: Path, shown: str, line: Callable[[], int] = lambda: 0) -> Iterator[None]:
    """Turn every failure to read ``path`` into a one-line problem naming it (and the line reached, if any)."""
    try:
        yield
    except (OSError, EOFError, zlib.error) as e:
        raise KubetuneError([_read_problem(shown, line(), e)], f"cannot read {shown}") from None


def _read_problem(shown: str, lines_read: int, error: BaseException) -> Problem:
    after = f" after line {lines_read}" if lines_read else ""
    if isinstance(error, EOFError):
        return Problem(f"{shown}:{lines_read + 1}", f"truncated gzip file: the compressed data ends unfinished{after}")
    if isinstance(error, gzip.BadGzipFile) and "Not a gzipped file" in str(error):
        return Problem(shown, "is not a gzip file", "rename it without .gz if it is plain JSON Lines")
    if isinstance(error, (gzip.BadGzipFile, zlib.error)):
        return Problem(f"{shown}:{lines_read + 1}", f"corrupt gzip data{after}: {error}")
    return Problem(shown, f"cannot be read: {getattr(error, 'strerror', None) or error}")


def _open(path: Path) -> BinaryIO:
    return gzip.open(path, "rb") if path.name.endswith(".gz") else path.open("rb")  # type: ignore[return-value]


def _starts_with(path: Path, shown: str, prefix: bytes) -> bool:
    with _reading(path, shown), _open(path) as f:
        head = f.read(4096).lstrip()
    return head.startswith(prefix)


def _too_large(what: str) -> BadRecord:
    return BadRecord("too_large", f"{what} is larger than {_mib(MAX_RECORD_BYTES)}, the limit for one record")


def _mib(size: int) -> str:
    return f"{size / 2**20:g} MiB" if size >= 2**20 else f"{size / 2**10:g} KiB"


def _skip_line(f: BinaryIO) -> int:
    """Read past the rest of an over-long line, a bounded chunk at a time; returns the bytes skipped."""
    skipped = 0
    while chunk := f.readline(2**20):
        skipped += len(chunk)
        if chunk.endswith(b"\n"):
            break
    return skipped


def _line_batches(path: Path, shown: str, size: int) -> Iterator[tuple[list[Item], int]]:
    """JSON Lines, a bounded line at a time: a line over ``MAX_RECORD_BYTES`` is never held whole."""
    batch: list[Item] = []
    advance = held = lineno = 0
    with _reading(path, shown, lambda: lineno), _open(path) as f:
        while line := f.readline(MAX_RECORD_BYTES + 1):
            lineno += 1
            advance += len(line)
            if len(line.rstrip(b"\r\n")) > MAX_RECORD_BYTES:
                advance += _skip_line(f)
                batch.append((f"{shown}:{lineno}", _too_large("the line")))
            elif line.strip():
                batch.append((f"{shown}:{lineno}", line))
                held += len(line)
            if len(batch) >= size or held >= MAX_BATCH_BYTES:
                yield batch, advance
                batch, advance, held = [], 0, 0
    yield batch, advance


_UNDECODABLE = re.compile("[\udc80-\udcff]")  # bytes that are not UTF-8, as surrogateescape decodes them


def _json_array_batches(path: Path, shown: str, size: int) -> Iterator[tuple[list[Item], int]]:
    """A JSON array file, element by element, each with the line it starts on (the file is read whole, so
    it may hold at most ``MAX_JSON_ARRAY_BYTES``). Each element is handed on as its own JSON text and parsed
    like a JSON line, so both formats decode bytes the same strict way."""
    with _reading(path, shown):
        file_size = path.stat().st_size
        if file_size > MAX_JSON_ARRAY_BYTES:
            raise KubetuneError(
                [
                    Problem(
                        shown,
                        f"is a JSON array of {_mib(file_size)}, over the {_mib(MAX_JSON_ARRAY_BYTES)} limit of .json arrays",
                        "write it as JSON Lines, one record a line: those are read as a stream",
                    )
                ],
                f"cannot read {shown}",
            )
        with _open(path) as f:
            text = f.read().decode("utf-8", errors="surrogateescape")
    decoder, pos, line, scanned = json.JSONDecoder(), text.index("[") + 1, 1, 0
    batch: list[Item] = []
    held, ws = 0, re.compile(r"[\s,]*")
    while True:
        pos = ws.match(text, pos).end()  # type: ignore[union-attr]
        if pos >= len(text):
            where = f"{shown}:{text.count(chr(10)) + 1}"
            raise KubetuneError([Problem(where, "invalid JSON: the array is not closed with `]`")], f"invalid data in {shown}")
        if text[pos] == "]":
            break
        line += text.count("\n", scanned, pos)
        scanned, start = pos, pos
        try:
            _, pos = decoder.raw_decode(text, pos)
        except (json.JSONDecodeError, RecursionError) as e:
            where = f"{shown}:{text.count(chr(10), 0, getattr(e, 'pos', start)) + 1}"
            message = f"invalid JSON: {e.msg}" if isinstance(e, json.JSONDecodeError) else "invalid JSON: nested too deeply"
            raise KubetuneError([Problem(where, message)], f"invalid data in {shown}") from None
        batch.append(_array_element(text, start, pos, shown, line))
        held += pos - start
        if len(batch) >= size or held >= MAX_BATCH_BYTES:
            yield batch, 0
            batch, held = [], 0
    yield batch, file_size


def _array_element(text: str, start: int, end: int, shown: str, line: int) -> Item:
    if end - start > MAX_RECORD_BYTES:
        return f"{shown}:{line}", _too_large("the array element")
    bad = _UNDECODABLE.search(text, start, end)
    if bad:
        where = f"{shown}:{line + text.count(chr(10), start, bad.start())}"
        byte = ord(bad.group()) - 0xDC00
        return where, BadRecord("invalid_json", f"invalid JSON: not UTF-8 (byte 0x{byte:02x})")
    return f"{shown}:{line}", text[start:end]


def _parquet_batches(path: Path, shown: str, size: int) -> Iterator[tuple[list[Item], int]]:
    """Parquet rows, a batch at a time. A row over ``MAX_RECORD_BYTES`` is refused before it becomes Python
    objects (pyarrow itself reads a whole row group); strings that are not UTF-8 are refused per row."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    row = 0
    try:
        parquet = pq.ParquetFile(path)
        per_row = path.stat().st_size / max(parquet.metadata.num_rows, 1)
        for record_batch in parquet.iter_batches(batch_size=size):
            items = _parquet_rows(record_batch, shown, row)
            yield items, int(len(items) * per_row)
            row += len(items)
    except (pa.ArrowException, OSError) as e:
        where = f"{shown}:row {row + 1}" if row else shown
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise KubetuneError([Problem(where, f"is not a readable Parquet file: {message}")], f"cannot read {shown}") from None


def _parquet_rows(record_batch: Any, shown: str, first: int) -> list[Item]:
    if record_batch.nbytes <= MAX_RECORD_BYTES:
        try:
            return [(f"{shown}:row {first + i + 1}", r) for i, r in enumerate(record_batch.to_pylist())]
        except UnicodeDecodeError:
            pass  # find the rows, one at a time
    items: list[Item] = []
    for i in range(record_batch.num_rows):
        one = record_batch.slice(i, 1)
        where = f"{shown}:row {first + i + 1}"
        if one.nbytes > MAX_RECORD_BYTES:
            items.append((where, _too_large("the row")))
            continue
        try:
            items.append((where, one.to_pylist()[0]))
        except UnicodeDecodeError as e:
            items.append((where, BadRecord("invalid_json", f"not UTF-8: a string holds byte 0x{e.object[e.start]:02x}")))
    return items


def _dataset_batches(dataset: Any, shown: str, size: int) -> Iterator[tuple[list[Item], int]]:
    row = 0
    for columns in dataset.iter(batch_size=size):
        names = list(columns)
        rows = [dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)]
        yield [(f"{shown}:row {row + i + 1}", r) for i, r in enumerate(rows)], len(rows)
        row += len(rows)


def _saved_dataset(path: Path, shown: str) -> Source:
    from datasets import DatasetDict, load_from_disk

    try:
        dataset = load_from_disk(str(path))
    except Exception as e:  # a damaged or partial save_to_disk directory: datasets raises many kinds
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise KubetuneError([Problem(shown, f"cannot be loaded as a saved dataset: {first}")], "invalid data") from None
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
