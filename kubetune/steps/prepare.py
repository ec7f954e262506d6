"""Data preparation: check every record, drop or fail by policy, tokenize once, split train/validation.

One pass over the data, in parallel worker processes and with bounded memory: each batch of raw lines
is parsed, checked (``kubetune.data.records``), tokenized with the model's chat template
(``kubetune.data.tokenize``) and measured against ``max_seq_len``. Results come back in input order, so
the output does not depend on the number of workers. Kept samples are spooled to disk; the deterministic
split (seed and ratio, or a separate validation source) then moves them into place.

Each output is a directory that every backend reads as is:

- ``data.jsonl``: ``input_ids``, ``labels`` (``-100`` outside learned tokens), ``len``,
  ``num_loss_counted_tokens`` -- mini-trainer's pre-tokenized input, instructlab-training's processed data
  (run it with ``process_data=False`` and ``data_output_dir`` = this directory) and TRL's tokenized dataset;
- ``messages.jsonl``: the same samples, in order, as normalized chat records (for other tools and readers).

With ``on_invalid="fail"`` nothing is written when any record is bad; every bad record is reported with
its file, line and reason. Outputs are staged and renamed into place, so a failure leaves no half output.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import re
import shutil
import tempfile
from array import array
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any, Literal, NamedTuple

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from kubetune.contract import TrainingSpec
from kubetune.contract.spec import pydantic_problems
from kubetune.data import DATA_FILE, MESSAGES_FILE
from kubetune.data.records import REASONS, BadRecord, DataFormat, normalize
from kubetune.data.sources import check_source, open_source
from kubetune.data.tokenize import ChatEncoder
from kubetune.data.tokenize import sample as make_sample
from kubetune.errors import KubetuneError, Problem
from kubetune.files import SYSTEM_FOLDERS, replaced, staging_dir, swap_into_place, write_text_atomic
from kubetune.runtime import resolve_model
from kubetune.s3 import public_uri, url_scheme

MAX_LISTED_PROBLEMS = 100
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}(/[A-Za-z0-9][\w.-]{0,95})?")  # gpt2, org/name: else a local path
SEED_MAX = 2**32 - 1  # like the spec's seeds (numpy's are 32-bit)
# reasons that the length policy decides; every other reason is invalid input, decided by on_invalid
LENGTH_REASONS = {"too_long", "no_label_tokens"}


class PrepareConfig(BaseModel):
    """How data is checked, cut and split. Field names are what error messages name."""

    model_config = ConfigDict(extra="forbid")

    validation_ratio: float = Field(0.1, description="share held out when no validation source is given, in [0, 1)")
    seed: int = Field(42, description="same data, ratio and seed: same split; 0..2^32-1")
    on_invalid: Literal["fail", "skip"] = Field("fail", description="fail: stop, write nothing; skip: drop and list")
    too_long: Literal["drop", "truncate", "fail"] = Field("drop", description="samples longer than max_seq_len")
    max_seq_len: int | None = Field(None, gt=0, description="longest sample in tokens (None: no limit)")
    dedup: bool = Field(False, description="drop exact duplicates (also validation samples that repeat training ones)")
    data_format: DataFormat = Field("chat", description="chat (messages or Alpaca) or document (pretraining)")
    document_column: str = Field("document", description="the text column of pretraining documents")
    num_proc: int | None = Field(None, gt=0, description="worker processes (default: every available core)")
    batch_size: int = Field(512, gt=0, description="records per worker task")

    @field_validator("validation_ratio")
    @classmethod
    def _ratio(cls, value: float) -> float:
        if not 0 <= value < 1:  # NaN fails too
            raise PydanticCustomError("ratio", "must be a finite number in [0, 1), got {value}", {"value": str(value)})
        return value

    @field_validator("seed")
    @classmethod
    def _seed(cls, value: int) -> int:
        if not 0 <= value <= SEED_MAX:
            raise PydanticCustomError("seed", "must be an integer from 0 to 2^32-1, got {value}", {"value": str(value)})
        return value

    @classmethod
    def checked(cls, **values: Any) -> PrepareConfig:
        try:
            return cls(**values)
        except ValidationError as e:
            raise KubetuneError(pydantic_problems(e, empty="config"), "invalid data preparation parameters") from None


# ---------------------------------------------------------------- worker side (one process per core)

_encoder = None


def _start_worker(tokenizer_path: str) -> None:
    global _encoder
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # parallel across processes, not inside each
    _encoder = ChatEncoder.load(tokenizer_path)


class TokenStats(BaseModel):
    """Token lengths of one split's samples."""

    model_config = ConfigDict(frozen=True)

    min: int
    mean: float
    p95: float
    max: int
    total: int


class PrepareSummary(BaseModel):
    """What a preparation did: sources, counts, token lengths, why records were dropped, and its settings.
    Written as the report's ``summary``; its numbers are the step's metrics."""

    model_config = ConfigDict(frozen=True)

    source: str
    validation_source: str
    records: int
    train_samples: int
    validation_samples: int
    dropped: int
    dropped_by_reason: dict[str, int]
    truncated: int
    train_tokens: TokenStats
    validation_tokens: TokenStats
    config: dict[str, Any]

    def metrics(self) -> dict[str, float]:
        """The summary as flat KFP metrics."""
        out: dict[str, float] = {
            k: getattr(self, k) for k in ("records", "train_samples", "validation_samples", "dropped", "truncated")
        }
        out.update({f"dropped_{reason}": count for reason, count in self.dropped_by_reason.items()})
        out.update({f"train_tokens_{k}": v for k, v in self.train_tokens.model_dump().items()})
        out.update({f"validation_tokens_{k}": v for k, v in self.validation_tokens.model_dump().items()})
        return out

    def dataset_metadata(self, part: str) -> dict[str, Any]:
        """The metadata of the ``train`` or ``validation`` dataset artifact (the export's model card reads it)."""
        tokens = self.train_tokens if part == "train" else self.validation_tokens
        return {"format": "kubetune-tokenized", "samples": getattr(self, f"{part}_samples"), "tokens": tokens.total}


class Batch(NamedTuple):
    """A worker's result for one batch: kept samples in input order (their lines and measures) and bad records."""

    where: list[str]
    digests: list[bytes]
    lengths: list[int]
    truncated: int
    messages: list[bytes]  # JSON lines
    data: list[bytes]
    bad: list[tuple[str, str, str]]  # (where, reason, message)


def _process(items: list[tuple[str, Any]], config: PrepareConfig) -> Batch:
    batch = Batch([], [], [], 0, [], [], [])
    records, wheres = [], []
    for where, payload in items:
        try:
            if isinstance(payload, BadRecord):  # found while reading (too large, not UTF-8)
                raise payload
            if isinstance(payload, (bytes, str)):
                record = orjson.loads(payload)
                _refuse_duplicate_keys(payload)
            else:
                record = payload
            records.append(normalize(record, config.data_format, config.document_column))
            wheres.append(where)
        except orjson.JSONDecodeError as e:
            batch.bad.append((where, "invalid_json", _json_error(payload, e)))
        except BadRecord as e:
            batch.bad.append((where, e.code, e.message))
    truncated = 0
    for where, record, result in zip(wheres, records, _encoder.encode(records), strict=True):
        try:
            if isinstance(result, BadRecord):
                raise result
            tokens, cut = _fit(record, result, config)
        except BadRecord as e:
            batch.bad.append((where, e.code, e.message))
            continue
        text = orjson.dumps(record, option=orjson.OPT_SORT_KEYS if config.dedup else 0)
        batch.where.append(where)
        batch.digests.append(hashlib.blake2b(text, digest_size=8).digest() if config.dedup else b"")
        batch.lengths.append(tokens["len"])
        batch.messages.append(text + b"\n")
        batch.data.append(orjson.dumps(tokens) + b"\n")
        truncated += cut
    return batch._replace(truncated=truncated)


class _DuplicateKey(Exception):
    pass


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    record = dict(pairs)
    if len(record) != len(pairs):
        seen: set[str] = set()
        raise _DuplicateKey(next(k for k, _ in pairs if k in seen or seen.add(k)))  # type: ignore[func-returns-value]
    return record


def _refuse_duplicate_keys(payload: bytes | str) -> None:
    """A key given twice in one object is refused (JSON parsers silently keep one of the values, each its own)."""
    try:
        json.loads(payload, object_pairs_hook=_unique_pairs)
    except _DuplicateKey as e:
        key = repr(e.args[0])
        key = key if len(key) <= 40 else key[:37] + "..."
        raise BadRecord("invalid_json", f"invalid JSON: the key {key} appears twice in one object") from None
    except (ValueError, RecursionError):
        pass  # orjson, which read it, is the judge of valid JSON


def _json_error(payload: bytes | str, error: Exception) -> str:
    """The standard library's wording (message and column) for a line orjson rejected."""
    try:
        text = payload.decode("utf-8") if isinstance(payload, bytes) else payload
    except UnicodeDecodeError as e:
        return f"invalid JSON: not UTF-8 (byte 0x{e.object[e.start]:02x} at byte {e.start + 1} of the line)"
    try:
        json.loads(text)
    except json.JSONDecodeError as e:
        return f"invalid JSON: {e.msg} (column {e.colno})"
    return f"invalid JSON: {error}"


def _fit(record: dict, tokens: dict, config: PrepareConfig) -> tuple[dict, bool]:
    """``tokens`` within ``max_seq_len`` by the length policy, and whether it was truncated."""
    if "document" in record:  # documents are cut into blocks by the backend
        return tokens, False
    if tokens["num_loss_counted_tokens"] == 0:
        raise BadRecord("no_label_tokens", "no token to learn: the chat template rendered no learned content")
    limit = config.max_seq_len
    if not limit or tokens["len"] <= limit:
        return tokens, False
    if config.too_long != "truncate":
        raise BadRecord("too_long", f"{tokens['len']} tokens, longer than max_seq_len={limit}")
    tokens = make_sample(tokens["input_ids"][:limit], tokens["labels"][:limit])
    if tokens["num_loss_counted_tokens"] == 0:
        raise BadRecord("no_label_tokens", f"nothing left to learn within max_seq_len={limit}")
    return tokens, True


def _batches(source, config: PrepareConfig, tokenizer_path: str, progress) -> Iterator[Batch]:
    """Every batch of ``source`` processed, in input order; at most 2 batches per worker are in flight."""
    workers = config.num_proc or len(os.sched_getaffinity(0))
    if workers == 1:
        _start_worker(tokenizer_path)
        for items, advance in source.batches(config.batch_size):
            yield _process(items, config)
            progress.update(advance)
        return
    with ProcessPoolExecutor(workers, initializer=_start_worker, initargs=(tokenizer_path,)) as pool:
        pending: list[tuple[Future, int]] = []
        for items, advance in source.batches(config.batch_size):
            pending.append((pool.submit(_process, items, config), advance))
            while len(pending) >= 2 * workers:
                yield _take(pending, progress)
        while pending:
            yield _take(pending, progress)


def _take(pending: list, progress) -> Batch:
    future, advance = pending.pop(0)
    try:
        batch = future.result()
    except (BrokenProcessPool, MemoryError) as e:
        why = "ran out of memory" if isinstance(e, MemoryError) else "died (killed, or out of memory?)"
        raise KubetuneError(
            [Problem("worker", f"a data preparation worker process {why}", "run again; with less memory, pass fewer workers")],
            "data preparation failed (nothing was written)",
        ) from None
    progress.update(advance)
    return batch


# ---------------------------------------------------------------- main process


class _Collector:
    """Gathers kept samples into spool files and everything dropped into the report, with counts."""

    def __init__(self, staging: Path, config: PrepareConfig):
        self.config = config
        self.staging = staging
        self.seen: dict[bytes, str] = {}
        self.lengths = {"train": array("I"), "validation": array("I")}
        self.truncated = 0
        self.dropped: Counter[str] = Counter()
        self.problems: list[Problem] = []
        self.problem_count = 0
        self.records = 0
        self.dropped_log = (staging / "dropped.jsonl").open("w", encoding="utf-8")

    def collect(self, batches: Iterator[Batch], part: str) -> None:
        data_path, messages_path = self.staging / f"{part}.{DATA_FILE}", self.staging / f"{part}.{MESSAGES_FILE}"
        # closing(): on an error, the worker pool inside ``batches`` shuts down now, not when the traceback goes
        with closing(batches), data_path.open("wb") as data, messages_path.open("wb") as messages:  # type: ignore[arg-type]
            for batch in batches:
                self.records += len(batch.where) + len(batch.bad)
                for bad in batch.bad:
                    self._bad(*bad)
                keep = range(len(batch.where))
                if self.config.dedup:
                    keep = [i for i in keep if self._first(batch.where[i], batch.digests[i])]
                    batch = batch._replace(**{f: [getattr(batch, f)[i] for i in keep] for f in ("lengths", "messages", "data")})
                messages.writelines(batch.messages)
                data.writelines(batch.data)
                self.lengths[part].extend(batch.lengths)
                self.truncated += batch.truncated

    def _first(self, where: str, digest: bytes) -> bool:
        if digest in self.seen:
            self._bad(where, "duplicate", f"exact duplicate of {self.seen[digest]}")
            return False
        self.seen[digest] = where
        return True

    def _bad(self, where: str, reason: str, message: str) -> None:
        fails = (reason not in LENGTH_REASONS and reason != "duplicate" and self.config.on_invalid == "fail") or (
            reason == "too_long" and self.config.too_long == "fail"
        )
        if fails:
            self.problem_count += 1
            if len(self.problems) < MAX_LISTED_PROBLEMS:
                self.problems.append(Problem(where, message))
            return
        self.dropped[reason] += 1
        self.dropped_log.write(json.dumps({"where": where, "reason": reason, "message": message}, ensure_ascii=False) + "\n")

    def raise_problems(self, source: str) -> None:
        if not self.problem_count:
            return
        problems = list(self.problems)
        if self.problem_count > len(problems):
            problems.append(Problem(source, f"... and {self.problem_count - len(problems)} more bad records"))
        raise KubetuneError(problems, f"invalid data in {source} (on_invalid=fail: nothing was written)")


def prepare(
    data_uri: str,
    model_path: str,
    train_out: str | Path,
    validation_out: str | Path,
    validation_uri: str | None = None,
    report_out: str | Path | None = None,
    summary_out: str | Path | None = None,
    overwrite: bool = False,
    **options: Any,
) -> PrepareSummary:
    """Prepare ``data_uri`` for training with the tokenizer of ``model_path``; returns the summary (also the metrics).

    Each output may already hold what an earlier ``prepare`` wrote (it is replaced whole) or be empty or
    absent; anything else is refused before a byte is read, unless ``overwrite``.
    """
    outputs = {"train": train_out, "validation": validation_out, "report": report_out, "summary": summary_out}
    check_places(data_uri, validation_uri, [path for path in outputs.values() if path])
    config = PrepareConfig.checked(**options)
    check_model(model_path, config.data_format)
    train_out, validation_out = Path(train_out), Path(validation_out)
    outputs = {kind: Path(path) for kind, path in outputs.items() if path}
    if not overwrite:
        refuse_foreign(outputs)
    return _staged(data_uri, model_path, outputs, validation_uri, config, train_out.parent)


def _staged(
    data_uri: str, model_path: str, outputs: dict[str, Path], validation_uri: str | None, config: PrepareConfig, shown: Path
) -> PrepareSummary:
    """``_prepare`` in a staging directory beside the outputs, removed whatever happens; ``shown`` names the
    output in a failure to write."""
    parent = outputs["train"].parent
    with writing(shown):
        for path in outputs.values():
            clean_stale(path)
        parent.mkdir(parents=True, exist_ok=True)
        staging = _stage(parent, f".prepare-{os.getpid()}-")
    try:
        with writing(shown):
            return _prepare(data_uri, model_path, staging, outputs, validation_uri, config)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _prepare(
    data_uri: str, model_path: str, staging: Path, outputs: dict[str, Path], validation_uri: str | None, config: PrepareConfig
) -> PrepareSummary:
    from tqdm.auto import tqdm

    collector = _Collector(staging, config)
    sources = [("train", data_uri), *([("validation", validation_uri)] if validation_uri else [])]
    with collector.dropped_log:  # closed on every way out: an open file would keep its disk busy
        for part, uri in sources:
            source = open_source(uri, staging / "download")
            with tqdm(total=source.total, unit=source.unit, unit_scale=True, desc=f"prepare {part}", mininterval=2) as bar:
                collector.collect(_batches(source, config, model_path, bar), part)
            collector.raise_problems(source.name)
    if not collector.lengths["train"]:
        raise KubetuneError([Problem(data_uri, "holds no usable sample")], "invalid data")
    if not validation_uri:
        _split(staging, collector, config)
    summary = _summary(data_uri, validation_uri, config, collector)
    for part in ("train", "validation"):
        _publish({DATA_FILE: staging / f"{part}.{DATA_FILE}", MESSAGES_FILE: staging / f"{part}.{MESSAGES_FILE}"}, outputs[part])
    if "report" in outputs:
        _write_report(outputs["report"], summary, staging / "dropped.jsonl")
    if "summary" in outputs:
        write_text_atomic(outputs["summary"], markdown(summary, staging / "dropped.jsonl"))
    return summary


def prepare_dir(
    data_uri: str,
    model_path: str,
    out: str | Path,
    overwrite: bool = False,
    validation_uri: str | None = None,
    **options: Any,
) -> PrepareSummary:
    """``prepare`` into one directory (``kubetune prepare -o``): ``train/``, ``validation/``, ``report.json``,
    ``summary.md``. The directory is built beside ``out`` and renamed into place whole, so a reader (or a
    killed run) sees the previous output, the new one, or none; never a mix. ``out`` must be absent, empty or
    an earlier output of this command, unless ``overwrite``; it may never hold the data or the model."""
    check_places(data_uri, validation_uri, [out])
    config = PrepareConfig.checked(**options)
    out = Path(out)
    check_model(model_path, config.data_format)
    _refuse_enclosing(out, {"the data": data_uri, "the validation data": validation_uri, "the model": model_path})
    if not overwrite:
        refuse_foreign({"output": out})
    _refuse_uncreatable(out)
    with writing(out):
        clean_stale(out)
        staged = _stage(out.parent, f".{out.name}.prepare-{os.getpid()}-")
    try:
        outputs = {"train": staged / "train", "validation": staged / "validation"}
        outputs |= {"report": staged / "report.json", "summary": staged / "summary.md"}
        summary = _staged(data_uri, model_path, outputs, validation_uri, config, out)
        with writing(out):
            _mark(staged)
            (staged / STAGING_MARKER).unlink()
            if out.is_symlink() or out.is_file():  # only with overwrite: a file where the directory goes
                out.unlink()
            swap_into_place(staged, out)
        return summary
    finally:
        shutil.rmtree(staged, ignore_errors=True)


# ---------------------------------------------------------------- outputs: ours or refused

MARKER = ".kubetune-prepared"  # written last into every directory prepare creates: it marks the directory as ours
OUTPUT_ENTRIES = {"train", "validation", "report.json", "summary.md", MARKER}
DATASET_ENTRIES = {DATA_FILE, MESSAGES_FILE, MARKER}
_FILE_HEADS = {"report": b'{"summary": ', "summary": b"# Data preparation"}  # how our report and summary begin
_KINDS = {"train": "dataset", "validation": "dataset", "report.json": "report", "summary.md": "summary"}


def _mark(directory: Path) -> None:
    (directory / MARKER).write_text(json.dumps({"written_by": "kubetune prepare"}) + "\n", encoding="utf-8")


def _foreign(path: Path, kind: str) -> str | None:
    """What in ``path`` kubetune did not write (so replacing it would lose it), or None."""
    if not path.exists() and not path.is_symlink():
        return None
    if kind in _FILE_HEADS:
        if path.is_symlink() or not path.is_file():
            return "is not a file written by kubetune prepare"
        with path.open("rb") as f:
            head = f.read(len(_FILE_HEADS[kind]))
        return None if head == _FILE_HEADS[kind] else "is a file kubetune prepare did not write"
    if path.is_symlink() or not path.is_dir():
        return "is not a directory"
    entries = sorted(p.name for p in path.iterdir())
    if not entries:
        return None
    allowed = OUTPUT_ENTRIES if kind == "output" else DATASET_ENTRIES
    others = [name for name in entries if name not in allowed]
    if others:
        more = f" and {len(others) - 1} more entries" if len(others) > 1 else ""
        return f"holds `{others[0]}`{more}, not written by kubetune prepare"
    if MARKER not in entries:
        return f"holds files but no `{MARKER}` marker, so kubetune prepare did not write them"
    if kind == "output":
        for name in entries:
            if name in _KINDS and (why := _foreign(path / name, _KINDS[name])):
                return f"holds `{name}`, which {why}"
    return None


def refuse_foreign(outputs: dict[str, Path]) -> None:
    """Refuse, before anything is read, to replace outputs holding what kubetune did not write."""
    problems = [
        Problem(str(path), why, "use a new or empty directory, or --overwrite to replace it")
        for kind, path in outputs.items()
        if (why := _foreign(path, kind))
    ]
    if problems:
        raise KubetuneError(problems, "refusing to replace data kubetune did not prepare")


def _refuse_enclosing(out: Path, inputs: dict[str, str | None]) -> None:
    """An output directory is replaced whole: it must not hold the inputs, nor the working directory; nor may
    it lie inside a data directory (the next run would read it as data)."""
    target = out.resolve()
    if str(target) in SYSTEM_FOLDERS:
        raise KubetuneError(
            [Problem(str(out), f"is the system folder {target}", "write the prepared data to a directory of its own inside it")],
            "refusing to replace the output directory",
        )
    home = Path(os.path.expanduser("~"))
    places = {name: Path(uri).resolve() for name, uri in inputs.items() if uri and url_scheme(uri) is None} | {
        "the working directory": Path.cwd(),
        **({"the home directory": home.resolve()} if home.is_absolute() else {}),
    }
    for name, place in places.items():
        if place == target or target in place.parents:
            raise KubetuneError(
                [Problem(str(out), f"holds {name} ({place})", "write the prepared data to a directory of its own")],
                "refusing to replace the output directory",
            )
        if "data" in name and place.is_dir() and place in target.parents:
            raise KubetuneError(
                [Problem(str(out), f"is inside {name} ({place}): a later run would read its own output as data")],
                "refusing to write the output inside the data",
            )


def check_places(data_uri: str, validation_uri: str | None, outputs: list[str | Path]) -> None:
    """Sources kubetune reads, a validation source other than the training one, outputs that are local paths."""
    check_source(data_uri, "data")
    if validation_uri:
        check_source(validation_uri, "validation data")
        if _same_place(data_uri, validation_uri):
            raise KubetuneError(
                [Problem(public_uri(validation_uri), "is the training data itself", "give other data, or none to split")],
                "invalid validation data",
            )
    for out in outputs:
        if url_scheme(str(out)):
            raise KubetuneError(
                [Problem(public_uri(str(out)), "is a URL: outputs are local directories", "give a local path")], "invalid output"
            )


def _same_place(a: str, b: str) -> bool:
    if url_scheme(a) or url_scheme(b):
        return a.rstrip("/") == b.rstrip("/")
    return Path(a).resolve() == Path(b).resolve()


def _refuse_uncreatable(out: Path) -> None:
    """A directory cannot be made below a file: say so before anything runs."""
    for parent in out.parents:
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise KubetuneError([Problem(str(out), f"cannot be created: {parent} is not a directory")], "invalid output")
            return


STAGING_MARKER = ".kubetune-staging"  # written first into every staging directory: it marks the directory as ours
_RANDOM = r"[a-z0-9_]{8}"  # the 8 characters tempfile.mkdtemp adds to a prefix


def _stage(parent: Path, prefix: str) -> Path:
    """A new staging directory, marked as kubetune's (with the run's pid) before anything else goes in."""
    staged = staging_dir(parent, prefix)
    (staged / STAGING_MARKER).write_text(f"{os.getpid()}\n", encoding="utf-8")
    return staged


def _ours(path: Path) -> bool:
    """A real directory (not a link, not a file) holding one of kubetune's markers."""
    return path.is_dir() and not path.is_symlink() and any((path / m).is_file() for m in (STAGING_MARKER, MARKER))


def clean_stale(out: Path) -> None:
    """Remove what killed runs of this command left beside ``out``; a previous output caught mid-swap is put
    back first. Only directories named exactly as kubetune names them for ``out`` and holding its marker are
    touched (a staging one only when its run is gone): whatever else is there belongs to the user."""
    parent = out.parent
    if not parent.is_dir():
        return
    name = re.escape(out.name)
    aside = re.compile(rf"\.{name}\.old-{_RANDOM}")
    staging = re.compile(rf"(?:\.{name}\.(?:prepare|staging)|\.prepare)-(\d+)-{_RANDOM}")
    entries = sorted(parent.iterdir())
    if not out.exists() and not out.is_symlink():
        old = [p for p in entries if aside.fullmatch(p.name) and (p / MARKER).is_file() and _ours(p)]
        if old:
            old[-1].rename(out)  # killed between the two renames of a swap: the previous output, whole
    for path in entries:
        if _stale(path, aside, staging):
            shutil.rmtree(path, ignore_errors=True)


def _stale(path: Path, aside: re.Pattern, staging: re.Pattern) -> bool:
    """An output swapped aside, or the staging directory of a run that is gone, both marked as kubetune's."""
    if aside.fullmatch(path.name):
        return _ours(path)
    match = staging.fullmatch(path.name)
    return bool(match) and _ours(path) and _dead(int(match.group(1)))


def _dead(pid: int) -> bool:
    """Whether the run with process id ``pid`` is gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


@contextmanager
def writing(out: Path) -> Iterator[None]:
    """Failures to write (read-only or full disk, no permission) end with one line naming the output."""
    try:
        yield
    except OSError as e:
        code = errno.errorcode.get(e.errno or 0, "")
        why = f"{e.strerror} ({code})" if e.strerror and code else str(e)
        raise KubetuneError([Problem(str(out), f"cannot write the prepared data: {why}")], "cannot write the output") from None


def check_model(model_path: str, data_format: str = "chat") -> None:
    """The model's tokenizer (and, for chat data, its chat template) loads: checked once, before any worker."""
    path = Path(model_path)
    if path.is_dir() and not any((path / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")):
        raise KubetuneError([Problem(model_path, "has no tokenizer (tokenizer.json, tokenizer_config.json)")], "invalid model")
    if not path.exists() and not path.is_symlink() and not HUB_ID.fullmatch(model_path):
        hint = "give a model directory or a hub id"
        raise KubetuneError([Problem(public_uri(model_path), "does not exist", hint)], "invalid model")
    if path.exists() and not path.is_dir():
        raise KubetuneError([Problem(model_path, "is not a model directory")], "invalid model")
    try:
        encoder = ChatEncoder.load(model_path)
        if data_format == "chat":
            encoder._template  # noqa: B018 (compiles it)
    except Exception as e:  # no template, a template that does not compile, an unreadable or unreachable tokenizer
        message = " ".join(str(e).split())[:300] or type(e).__name__
        if not path.exists() and os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
            message = "is no local directory and not in the hub cache (HF_HUB_OFFLINE is set: nothing is downloaded)"
            raise KubetuneError([Problem(model_path, message)], "invalid model") from None
        raise KubetuneError([Problem(model_path, f"its tokenizer cannot be used: {message}")], "invalid model") from None


def options_from_spec(spec: TrainingSpec | None) -> dict[str, Any]:
    """What the kwargs artifact says about the data: its length limit, and whether it is pretraining text."""
    params = spec.params if spec else {}
    options: dict[str, Any] = {"max_seq_len": params.get("max_seq_len")}
    if params.get("is_pretraining"):
        options.update(data_format="document", document_column=params.get("document_column_name") or "document")
    return options


def prepare_step(data_uri: str, model_uri: str, kwargs_path: str | Path | None, **arguments: Any) -> PrepareSummary:
    """The pipeline's preparation step: the model's tokenizer and the kwargs artifact's limits, then ``prepare``."""
    options = options_from_spec(TrainingSpec.read(kwargs_path) if kwargs_path else None)
    if arguments.get("max_seq_len") is None:  # an explicit limit wins over the kwargs artifact's
        arguments.pop("max_seq_len", None)
    else:
        options.pop("max_seq_len")
    with tempfile.TemporaryDirectory(prefix="kubetune-model-") as workdir:
        return prepare(data_uri, resolve_model(model_uri, workdir), **arguments, **options)


def _split(staging: Path, collector: _Collector, config: PrepareConfig) -> None:
    """Move a seeded random ``validation_ratio`` of the kept samples from train into validation."""
    lengths = collector.lengths["train"]
    n = len(lengths)
    n_val = round(n * config.validation_ratio)
    if config.validation_ratio > 0 and n > 1:
        n_val = min(max(n_val, 1), n - 1)
    if n_val == 0:
        for name in (DATA_FILE, MESSAGES_FILE):
            (staging / f"validation.{name}").touch()
        return
    held_out = set(random.Random(config.seed).sample(range(n), n_val))
    files = {}
    for part in ("train", "validation"):
        for name in (DATA_FILE, MESSAGES_FILE):
            files[part, name] = (staging / f"{part}.{name}.split").open("wb")
    kept_lengths = {"train": array("I"), "validation": array("I")}
    with (staging / f"train.{DATA_FILE}").open("rb") as data, (staging / f"train.{MESSAGES_FILE}").open("rb") as messages:
        for i, (data_line, message_line) in enumerate(zip(data, messages, strict=True)):
            part = "validation" if i in held_out else "train"
            files[part, DATA_FILE].write(data_line)
            files[part, MESSAGES_FILE].write(message_line)
            kept_lengths[part].append(lengths[i])
    for (part, name), f in files.items():
        f.close()
        os.replace(staging / f"{part}.{name}.split", staging / f"{part}.{name}")
    collector.lengths = kept_lengths


def _publish(files: dict[str, Path], out: Path) -> None:
    """Move ``files`` into the directory ``out`` as one rename (an existing ``out`` is replaced), marked as ours."""
    staged = _stage(out.parent, f".{out.name}.staging-{os.getpid()}-")
    try:
        for name, path in files.items():
            os.replace(path, staged / name)
        _mark(staged)
        (staged / STAGING_MARKER).unlink()
        swap_into_place(staged, out)
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def _stats(lengths: array) -> TokenStats:
    import numpy as np

    if not lengths:
        return TokenStats(min=0, mean=0.0, p95=0.0, max=0, total=0)
    values = np.frombuffer(lengths, dtype=np.uint32)
    return TokenStats(
        min=int(values.min()),
        mean=round(float(values.mean()), 2),
        p95=round(float(np.percentile(values, 95)), 2),
        max=int(values.max()),
        total=int(values.sum(dtype=np.uint64)),
    )


def _summary(data_uri: str, validation_uri: str | None, config: PrepareConfig, collector: _Collector) -> PrepareSummary:
    return PrepareSummary(
        source=data_uri,
        validation_source=validation_uri or f"split of {data_uri} (ratio {config.validation_ratio}, seed {config.seed})",
        records=collector.records,
        train_samples=len(collector.lengths["train"]),
        validation_samples=len(collector.lengths["validation"]),
        dropped=sum(collector.dropped.values()),
        dropped_by_reason={reason: collector.dropped[reason] for reason in REASONS if collector.dropped[reason]},
        truncated=collector.truncated,
        train_tokens=_stats(collector.lengths["train"]),
        validation_tokens=_stats(collector.lengths["validation"]),
        config=config.model_dump(exclude={"num_proc", "batch_size"}),
    )


def _dropped(log: Path) -> Iterator[dict]:
    with log.open(encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)


def _write_report(path: Path, summary: PrepareSummary, dropped_log: Path) -> None:
    """``{"summary": ..., "dropped": [every dropped record's where, reason, message]}``, streamed to disk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with replaced(path) as partial, partial.open("w", encoding="utf-8") as f:
        f.write('{"summary": ' + json.dumps(summary.model_dump(), ensure_ascii=False) + ', "dropped": [')
        for i, entry in enumerate(_dropped(dropped_log)):
            f.write(("," if i else "") + "\n  " + json.dumps(entry, ensure_ascii=False))
        f.write("\n]}\n")


def markdown(summary: PrepareSummary, dropped_log: Path, listed: int = 20) -> str:
    """The summary the KFP UI shows: counts, token lengths, why records were dropped (first ``listed``)."""
    t, v = summary.train_tokens.model_dump(), summary.validation_tokens.model_dump()
    lines = [
        "# Data preparation",
        "",
        f"Source: `{summary.source}`; validation: {summary.validation_source}.",
        "",
        "| | train | validation |",
        "|---|---|---|",
        f"| samples | {summary.train_samples} | {summary.validation_samples} |",
        *(f"| tokens {k} | {t[k]} | {v[k]} |" for k in ("min", "mean", "p95", "max", "total")),
        "",
        f"{summary.records} records read, {summary.dropped} dropped, {summary.truncated} truncated.",
    ]
    if summary.dropped_by_reason:
        lines += ["", "| dropped because | records |", "|---|---|"]
        lines += [f"| {REASONS[r]} | {n} |" for r, n in summary.dropped_by_reason.items()]
        lines += ["", "First dropped records (all are in the report artifact):", ""]
        for i, entry in enumerate(_dropped(dropped_log)):
            if i == listed:
                break
            lines.append(f"- `{entry['where']}`: {entry['message']}")
    return "\n".join(lines) + "\n"
