"""Model export to a local/PVC directory, to S3 or as an OCI modelcar: staged, checksummed, then published whole.

The model is written to a staging directory (full model; LoRA adapter alone or merged into its base, in
safetensors; tokenizer and chat template; the training spec, loss curve and a model card) with
``manifest.json`` (SHA-256 and size of every file) written last. The model card and the shipped spec
(``kubetune-spec.json``) name the base model the run trained: the pipeline's ``model_uri`` (``base_model_uri``
here), whatever the spec's ``model_path`` said (``trained_spec``). The export is then published:

- local/PVC (``publish_local``): the staging directory ``.export-staging-<token>-<name>`` is built beside
  the destination; an older export there is renamed aside to ``.<name>.old-<token>``, the staging
  directory is renamed into place, and the old one is deleted. A reader sees the old complete export,
  then for the instant between the two renames no directory (verify: "interrupted"), then the new
  complete export. An in-process failure renames the old export back. After a SIGKILL the next export
  run to the same destination ROLLS BACK: if the destination is missing, the old export is renamed back
  into place; leftover staging and old directories of that destination are deleted.
- S3 (``publish.py``): a journal under ``prefix/.kubetune-staging/<run>/`` makes every in-between state
  explicit; a failed or killed run is rolled back to the previous export (see that module).
- OCI (``oci://registry/repository:tag``, ``kubetune.oci``): the staged export, manifest included, is packed under
  ``/models`` on a base image and pushed; the tag moves only once every blob is in the registry, and the pushed
  digest is checked. The result's ``uri`` pins the image by digest, ``tag`` is the reference pushed.

A reader treats the model as present only when ``manifest.json`` exists and matches (``verify``).

Nothing kubetune did not write is ever deleted unless the user passes ``overwrite``
(``check_destination``): a destination must be absent, empty, or hold a kubetune export (every file
listed in its manifest) or an interrupted one (its staging/journal). With ``overwrite=True`` the
destination ends up holding exactly the new export: whatever else it held is deleted once the new export
is complete (locally the directory is replaced whole; on S3 the other objects under the prefix are copied
to the staging prefix first, so that a failed export puts them back). A bucket root, a filesystem root,
and a destination inside the source or containing it are refused, with or without ``overwrite``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import shutil
import stat
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel, ConfigDict

from kubetune.backends.training_record import checkpoint_naming
from kubetune.checkpoints import TRAINING_STATE, adapter_base, find_checkpoints, is_adapter
from kubetune.checkpoints import problem as checkpoint_problem
from kubetune.contract import TrainingSpec
from kubetune.errors import KubetuneError, Problem
from kubetune.files import SYSTEM_FOLDERS, staging_dir, umask_modes
from kubetune.oci.modelcar import check_tag, pull_models, push_modelcar
from kubetune.oci.reference import SCHEME as OCI
from kubetune.oci.reference import parse as parse_oci
from kubetune.runtime import resolve_model
from kubetune.s3 import client, public_uri
from kubetune.steps.curve import LossCurve
from kubetune.steps.manifest import (
    MANIFEST,
    OVERWRITE_HINT,
    foreign_message,
    load_manifest,
    refuse,
    sha256,
    write_manifest,
)
from kubetune.steps.publish import check_s3_destination, publish_s3, verify_s3

WEIGHTS = ("*.safetensors", "*.safetensors.index.json", "*.bin", "*.pt", "*.pth")  # minus training state below
STAGED = re.compile(r"\.export-staging-([0-9a-f]{8})-(.+)")  # local staging: .export-staging-<token>-<name>
FOREIGN_SCANNED = 1000  # a refusal needs only a few: the scan stops here


def verify(destination: str | Path) -> list[str]:
    """Problems with an exported model (local path, s3:// or oci:// URI); an empty list means complete and intact.

    Reported: a missing manifest (saying so when an export run was interrupted), a truncated or invalid
    manifest, a listed file that is missing or does not match its checksum, and a file that is not listed."""
    if str(destination).startswith("s3://"):
        return verify_s3(str(destination))
    if str(destination).startswith(OCI):  # the image's /models, pulled and unpacked, checked as a local export
        with tempfile.TemporaryDirectory(prefix="kubetune-verify-") as workdir:
            try:
                models = pull_models(str(destination), Path(workdir))
            except KubetuneError as error:
                return [str(problem) for problem in error.problems]
            return [problem.replace(str(models), "/models") for problem in verify(models)]
    directory = Path(destination)
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        _, old = leftovers(directory.absolute())
        if old and not os.path.lexists(directory):
            return [
                f"{manifest_path} is missing: an export run was interrupted while replacing it; "
                f"the next export to {directory} restores the previous export"
            ]
        return [f"{manifest_path} is missing: the export is incomplete"]
    try:
        manifest = load_manifest(manifest_path.read_bytes())
    except ValueError as e:
        return [f"{manifest_path} is not a valid manifest: {e}"]
    except OSError as e:
        return [f"{manifest_path} cannot be read: {e.strerror}"]
    listed = set(manifest["files"])
    wrong = not_files(directory, listed)
    problems = [f"{name} is {kind}, not a file" for name, kind in wrong.items()]
    for name, entry in manifest["files"].items():
        path = directory / name
        if name in wrong:
            continue
        try:
            if not path.is_file():
                problems.append(f"{name} is missing")
            elif path.stat().st_size != entry["bytes"] or sha256(path) != entry["sha256"]:
                problems.append(f"{name} does not match its checksum")
        except OSError as e:
            problems.append(f"{name} cannot be read: {e.strerror}")
    problems += [f"{name} is not in the manifest" for name in unlisted(directory, listed)]
    return problems


def unlisted(directory: Path, listed: set[str], limit: int | None = None) -> list[str]:
    """Entries under ``directory`` (files, links, directories) that are neither ``manifest.json``, listed,
    nor a directory holding a listed file; a listed name that is a folder is looked into too (what it holds
    is not listed), symbolic links are not followed. At most ``limit`` of them."""
    parents = {parent.as_posix() for name in listed for parent in PurePosixPath(name).parents}
    found = []
    for top, directories, files in os.walk(directory):
        for name in sorted(directories) + sorted(files):
            relative = Path(top, name).relative_to(directory).as_posix()
            if relative != MANIFEST and relative not in listed and relative not in parents:
                found.append(relative)
                if limit is not None and len(found) >= limit:
                    return sorted(found)
        kept = parents | listed  # a foreign folder is named once; one the manifest lists as a file is looked into
        directories[:] = [d for d in directories if Path(top, d).relative_to(directory).as_posix() in kept]
    return sorted(found)


def not_files(directory: Path, listed: set[str]) -> dict[str, str]:
    """Listed names that are there but are not regular files, with what they are ("a folder", ...)."""
    found = {}
    for name in sorted(listed):
        try:
            mode = (directory / name).lstat().st_mode
        except OSError:
            continue  # missing: said elsewhere
        if not stat.S_ISREG(mode):
            found[name] = "a folder" if stat.S_ISDIR(mode) else "a symbolic link" if stat.S_ISLNK(mode) else "a special file"
    return found


def check_destination(
    destination: str, overwrite: bool = False, source: Path | None = None, protect: dict[str, Path] | None = None
) -> None:
    """Refuse, before a byte moves, a destination an export would wreck (KubetuneError naming it).

    Accepted: an absent or empty destination, a kubetune export (every file listed in its manifest, each a
    regular file), or an interrupted kubetune export (its staging or journal). Anything else is refused
    unless ``overwrite``: then the destination ends up holding exactly the new export (whatever else it
    held is deleted once the new export is complete). Always refused, ``overwrite`` or not (see ``place``):
    a bucket root, a URI that is not s3://, a place that cannot be a folder, a system folder, a destination
    that is or holds the working directory or the home directory, and one inside ``source`` or any
    ``protect`` path (the run's inputs and run folder, by the name a refusal gives them) or containing it
    (symbolic links resolved)."""
    destination = str(destination)
    if destination.startswith("s3://"):
        check_s3_destination(destination, overwrite)
        return
    if destination.startswith(OCI):
        check_tag(parse_oci(destination), overwrite)
        return
    target = place(destination, source, protect)
    if overwrite or not os.path.lexists(target):
        return
    if not target.is_dir():
        raise refuse(destination, "is a file, not a directory", OVERWRITE_HINT)
    listed = listed_files(target / MANIFEST)
    if listed is None:
        raise refuse(destination, f"holds a {MANIFEST} that is not a valid kubetune manifest", OVERWRITE_HINT)
    if wrong := not_files(target, listed):
        name, kind = next(iter(wrong.items()))
        message = f"is not a kubetune export: its {MANIFEST} lists {name}, which is {kind}, not a file"
        raise refuse(destination, message, OVERWRITE_HINT)
    foreign = unlisted(target, listed, FOREIGN_SCANNED)
    if foreign:
        raise refuse(destination, foreign_message(foreign, len(foreign) < FOREIGN_SCANNED), OVERWRITE_HINT)


SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
NO_FILES = ("/proc", "/sys")  # kernel views: nothing can be exported there


def place(destination: str, source: Path | None = None, protect: dict[str, Path] | None = None) -> Path:
    """The local destination, resolved; refused (``overwrite`` or not) where an export cannot or must not go."""
    if not destination.strip():
        raise refuse("destination", "is empty: give a directory or s3://bucket/prefix")
    if (scheme := SCHEME.match(destination)) and destination[scheme.end() :].startswith("//"):
        message = f"{scheme.group(1)}:// is not an export destination: give a directory or s3://bucket/prefix"
        raise refuse(destination, message)
    if os.path.islink(destination) and not os.path.exists(destination):
        raise refuse(destination, f"is a symbolic link to {os.readlink(destination)}, which does not exist")
    target = Path(destination).resolve()
    if target.parent == target:
        raise refuse(destination, "is a filesystem root: an export needs a directory of its own")
    for system in NO_FILES:
        if Path(system) in target.parents:
            raise refuse(destination, f"is under {system}, where no export can be written")
    if source is not None:
        checkpoint = Path(source).resolve()
        if target == checkpoint or checkpoint in target.parents:
            raise refuse(destination, f"is inside the checkpoint being exported ({source})")
        if target in checkpoint.parents:
            raise refuse(destination, f"contains the checkpoint being exported ({source}): exporting there would delete it")
    for name, where in _keep(protect):
        if target == where:
            raise refuse(destination, f"is {name} ({where}): an export replaces its destination whole")
        if target in where.parents:
            raise refuse(destination, f"contains {name} ({where}): exporting there would delete it")
        if where in target.parents and name not in ("the working directory", "the home directory"):
            raise refuse(destination, f"is inside {name} ({where})")
    if str(target) in SYSTEM_FOLDERS:
        raise refuse(destination, f"is the system folder {target}: export to a folder of its own inside it")
    for parent in target.parents:
        if os.path.lexists(parent):
            if not parent.is_dir():
                raise refuse(destination, f"cannot be created: {parent} is not a directory")
            break
    return target


def _keep(protect: dict[str, Path] | None) -> list[tuple[str, Path]]:
    """What a destination may neither be nor contain (nor, but for cwd and home, be inside): resolved."""
    home = os.path.expanduser("~")
    places = {"the working directory": _cwd(), "the home directory": None if home.startswith("~") else Path(home)}
    places.update(protect or {})
    return [(name, Path(where).resolve()) for name, where in places.items() if where is not None]


def _cwd() -> Path | None:
    try:
        return Path.cwd()
    except OSError:  # the working directory was deleted
        return None


def listed_files(manifest: Path) -> set[str] | None:
    """The names a local manifest lists: empty when there is none, None when it is not a valid one."""
    if not os.path.lexists(manifest):
        return set()
    if manifest.is_symlink() or not manifest.is_file():
        return None
    try:
        return set(load_manifest(manifest.read_bytes())["files"])
    except (ValueError, OSError):
        return None


def leftovers(target: Path) -> tuple[list[Path], list[Path]]:
    """What export runs to ``target`` left beside it: staging directories and renamed-aside old exports."""
    parent, name = target.parent, target.name
    staged: list[Path] = []
    old: list[Path] = []
    if not parent.is_dir():
        return staged, old
    for entry in parent.iterdir():
        match = STAGED.fullmatch(entry.name)
        if match and match.group(2) == name:
            staged.append(entry)
        elif entry.name.startswith(f".{name}.old-") and re.fullmatch(r"[0-9a-f]{8}", entry.name[len(name) + 6 :]):
            old.append(entry)
    return staged, sorted(old, key=lambda p: p.lstat().st_mtime)


def remove(path: Path) -> None:
    """Delete a file, a link (not its target) or a directory tree."""
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path)


def recover_local(target: Path) -> bool:
    """Undo what a killed export run to ``target`` left: roll back (an old export renamed aside while the
    destination is missing goes back into place), then delete the run's staging and old directories.
    Returns whether anything was left."""
    staged, old = leftovers(target)
    exports = [path for path in old if path.is_dir() and not path.is_symlink()]  # a link is not an export
    if exports and not os.path.lexists(target):
        os.rename(exports[-1], target)
        old.remove(exports[-1])
    for path in staged + old:
        remove(path)
    return bool(staged or old)


def publish_local(staged: Path, target: Path) -> None:
    """Rename the complete staging directory into place: an existing destination is renamed aside first
    and deleted after, or renamed back if the second rename fails."""
    token = STAGED.fullmatch(staged.name).group(1)
    old = target.with_name(f".{target.name}.old-{token}")
    moved = os.path.lexists(target)
    if moved:
        os.rename(target, old)
    try:
        os.rename(staged, target)
    except BaseException:
        if moved:
            os.rename(old, target)
        raise
    if moved:
        with contextlib.suppress(OSError):  # the new export is in place: the next run deletes what is left
            remove(old)


def unexportable(source: Path) -> list[Problem]:
    """A problem for each entry under ``source`` an export must not take: a symbolic link whose target is outside
    ``source`` (or loops: an export follows links, so it would publish a host file or another folder), and a name
    no manifest may list (not printable, a backslash: ``verify`` would call the manifest invalid)."""
    root, found = source.resolve(), []
    for top, directories, files in os.walk(source):  # links to folders are listed, not walked
        for name in sorted(directories + files):
            path = Path(top, name)
            if not name.isprintable() or "\\" in name:
                found.append(Problem(repr(str(path)), "has a name a manifest cannot list (not printable, or a backslash)",
                                     "rename or remove it"))  # fmt: skip
            if not path.is_symlink():
                continue
            link = f"is a symbolic link to {os.readlink(path)}"
            try:
                if path.resolve(strict=True).is_relative_to(root):
                    continue
                message = f"{link}, outside the model folder: an export never follows one"
            except (OSError, RuntimeError):
                message = f"{link}, which is missing or loops"
            found.append(Problem(str(path), message, "copy what it points to into the model folder, or remove it"))
    return sorted(found, key=lambda problem: problem.where)


def materialize(source: Path, staging: Path, merge: bool, base: str | None = None) -> str:
    """Write the model into ``staging``; returns what was exported: "full", "adapter" or "merged".

    ``base``: the base model of an adapter that is merged."""
    if not is_adapter(source):
        # weights are added by the caller from the checkpoint itself (see weight_files)
        shutil.copytree(source, staging, dirs_exist_ok=True, ignore=shutil.ignore_patterns(*TRAINING_STATE, *WEIGHTS))
        return "full"
    if not merge:
        for path in source.iterdir():
            if path.is_file() and (
                path.name.startswith(("adapter_", "tokenizer", "special_tokens")) or path.name == "chat_template.jinja"
            ):
                shutil.copy2(path, staging / path.name)
        return "adapter"
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, str(source)).merge_and_unload()
    model.save_pretrained(str(staging), safe_serialization=True)
    tokenizer_source = source if (source / "tokenizer_config.json").exists() else base
    AutoTokenizer.from_pretrained(str(tokenizer_source)).save_pretrained(str(staging))
    return "merged"


def weight_files(source: Path) -> dict[str, Path]:
    """A full checkpoint's weight files: exported as they are, so they are read from the checkpoint (for S3,
    uploaded from there) instead of being copied to the staging directory first."""
    if is_adapter(source):
        return {}
    return {p.name: p for pattern in WEIGHTS for p in sorted(source.glob(pattern)) if p.is_file()}


@dataclass(frozen=True)
class CardFacts:
    """What the model card says beside the export itself: the trained base model, the training spec (the artifact,
    bound to that base model), the evaluation's loss curve and the prepared data's sizes."""

    base_model: str | None = None
    spec: TrainingSpec | None = None
    curve: LossCurve | None = None
    data: dict[str, Any] | None = None


class ExportedModel(BaseModel):
    """The exported model artifact's metadata: where the model is and what it is (``ExportResult.metadata`` writes it,
    the registration step reads it back with ``from_metadata``)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    uri: str
    kind: str | None = None  # "full", "merged" or "adapter"
    checkpoint: str | None = None
    files: int | None = None
    bytes: int | None = None
    base_model: str | None = None  # the base model the card names, where known
    tag: str | None = None  # OCI: the oci://registry/repository:tag pushed; ``uri`` is oci://...@sha256:...

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> ExportedModel:
        return cls.model_validate(dict(metadata))


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote: where, what kind of model, how much, and its manifest and model card."""

    uri: str
    kind: str  # "full", "merged" or "adapter"
    files: int
    bytes: int
    skipped_files: int  # already at the destination with the same checksum (S3)
    seconds: float
    mb_per_s: float
    manifest: dict[str, Any]
    card: str
    checkpoint: str  # relative to the trained model's root in ``export_step``
    base_model: str | None = None  # the base model the card names, where known
    tag: str | None = None  # OCI: the reference pushed (``uri`` pins the image by digest)

    def location(self) -> ExportedModel:
        return ExportedModel(**{name: getattr(self, name) for name in ExportedModel.model_fields})

    def metadata(self) -> dict[str, Any]:
        """The exported model artifact's metadata (``ExportedModel``): its location and what it is."""
        return self.location().model_dump(exclude_none=True)

    def metrics(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in ("bytes", "files", "skipped_files", "seconds", "mb_per_s")}


def model_card(facts: CardFacts, kind: str, checkpoint: str) -> str:
    """A README.md for the exported model: where it came from, on what data, how well it does."""
    spec, curve, data = facts.spec, facts.curve, facts.data or {}
    params = spec.params if spec else {}
    lines = [
        "---",
        f"base_model: {facts.base_model or 'unknown'}",
        f"library_name: {'peft' if kind == 'adapter' else 'transformers'}",
        f"tags: [kubetune, {spec.algorithm if spec else 'fine-tuned'}]",
        "---",
        "",
        f"# Fine-tuned {facts.base_model or 'model'}",
        "",
        f"Trained with kubetune: `{spec.algorithm if spec else '?'}` through {spec.backend if spec else '?'}; exported "
        f"{datetime.now(UTC).date().isoformat()} ({kind} model, checkpoint `{checkpoint}`).",
        "",
        "| | |",
        "|---|---|",
    ]
    if curve:
        lines.append(f"| best validation loss | {curve.best.loss:.4f} at `{curve.best.checkpoint}` |")
    if data:
        lines.append(f"| training data | {data.get('train_samples', '?')} samples, {data.get('train_tokens', '?')} tokens |")
        lines.append(f"| validation data | {data.get('validation_samples', '?')} samples |")
    for key in ("learning_rate", "num_epochs", "effective_batch_size", "max_seq_len", "lora_r", "unfreeze_rank_ratio"):
        if params.get(key) is not None:
            lines.append(f"| {key} | {params[key]} |")
    if curve and curve.points:
        lines += ["", "## Validation loss per checkpoint", "", "| checkpoint | loss | perplexity |", "|---|---|---|"]
        lines += [f"| {p.checkpoint} | {p.loss:.4f} | {p.perplexity:.2f} |" for p in curve.points]
    lines += ["", f"`{MANIFEST}` lists the SHA-256 of every file; the model is complete only when it matches."]
    return "\n".join(lines) + "\n"


def preflight(destination: str) -> None:
    """Fail before any bytes move: a writable local directory (S3, OCI: ``check_destination`` reached the bucket/registry)."""
    if destination.startswith(("s3://", OCI)):
        return
    parent = Path(destination).resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=parent).close()
    except OSError as e:
        raise refuse(destination, f"is not writable: {e.strerror}") from None


def export(
    source: str | Path,
    destination: str | Path,
    merge: bool = True,
    extra_files: dict[str, str | Path] | None = None,
    card: CardFacts | None = None,
    base_model: str | None = None,
    training_root: str | Path | None = None,
    run_id: str | None = None,
    overwrite: bool = False,
    base_image: str = "",
) -> ExportResult:
    """Export the checkpoint ``source`` to ``destination`` (a directory, ``s3://bucket/prefix`` or
    ``oci://registry/repository:tag``, a modelcar on ``base_image``).

    A LoRA adapter that is merged needs its base model: its recorded path, ``base_model``, or the
    ``base/`` copy in ``training_root``. ``overwrite``: see ``check_destination``; without it a destination
    holding anything but a kubetune export is refused before a byte moves.
    """
    source, destination = Path(source), str(destination)
    if not source.is_dir():
        raise KubetuneError([Problem(str(source), "is not a model directory")], "cannot export")
    if damaged := checkpoint_problem(source):  # a half-written checkpoint is never published as a model
        raise KubetuneError([Problem(str(source), f"is not a complete checkpoint: {damaged}")], "cannot export")
    if found := unexportable(source):  # a link out of the folder, a name no manifest may list
        raise KubetuneError(found, "cannot export")
    to_s3, to_oci = destination.startswith("s3://"), destination.startswith(OCI)
    s3 = remote = oci = pushed = None
    if to_s3:  # one client and one listing for the whole export
        s3 = client()
        remote = check_s3_destination(destination, overwrite, s3)
    elif to_oci:
        oci = parse_oci(destination)
        check_tag(oci, overwrite)
    else:
        check_destination(destination, overwrite, source)
    base = (
        adapter_base(source, Path(training_root) if training_root else None, base_model) if merge and is_adapter(source) else None
    )
    preflight(destination)
    start = time.perf_counter()
    run_id = run_id or secrets.token_hex(4)
    if to_s3 or to_oci:
        staging = staging_dir(tempfile.gettempdir(), ".export-staging-")
    else:
        target = Path(destination).resolve()
        if recover_local(target):  # what a killed run left is rolled back; then the destination is checked again
            check_destination(destination, overwrite, source)
        staging = target.parent / f".export-staging-{secrets.token_hex(4)}-{target.name}"
    try:
        if not (to_s3 or to_oci):
            staging.mkdir()  # the umask's modes
        kind = materialize(source, staging, merge, base)
        for name, path in (extra_files or {}).items():
            if path and Path(path).is_file():
                shutil.copy2(path, staging / name)
        card_text = model_card(card or CardFacts(), kind, source.name)
        (staging / "README.md").write_text(card_text)
        weights = weight_files(source) if kind == "full" else {}
        weights = {name: path for name, path in weights.items() if not any(Path(name).match(t) for t in TRAINING_STATE)}
        if to_s3:
            manifest, skipped = publish_s3(staging, destination, run_id, weights, kind, overwrite, s3, remote)
        else:
            for name, path in weights.items():
                shutil.copy2(path, staging / name)
            manifest = write_manifest(staging, kind)  # last, in the staging directory nobody reads
            umask_modes(staging)  # copies keep the checkpoint's modes: a serving pod must read them
            if oci:
                pushed = push_modelcar(staging, oci, base_image)
            else:
                publish_local(staging, target)
            skipped = 0
    except OSError as e:
        where = e.filename or destination
        mount = (
            "a mount point cannot be replaced: export to a folder inside it" if e.errno in (errno.EBUSY, errno.EXDEV) else None
        )
        raise refuse(str(where), f"could not be written or read: {e.strerror or e}", mount) from None
    finally:
        if os.path.lexists(staging):
            shutil.rmtree(staging, ignore_errors=True)
    seconds = time.perf_counter() - start
    size = sum(f["bytes"] for f in manifest["files"].values())
    return ExportResult(
        uri=pushed.uri if pushed else destination,
        kind=kind,
        files=len(manifest["files"]) + 1,
        bytes=size,
        skipped_files=skipped,
        seconds=round(seconds, 3),
        mb_per_s=round(size / 1e6 / seconds, 2) if seconds else 0.0,
        manifest=manifest,
        card=card_text,
        checkpoint=source.name,
        base_model=card.base_model if card else None,
        tag=pushed.tag if pushed else None,
    )


def trained_spec(spec: TrainingSpec, base_model_uri: str | None) -> TrainingSpec:
    """The spec naming the base model the run trained: the pipeline trains ``model_uri`` (given to this step as
    ``base_model_uri``) whatever the spec's ``model_path`` says. Shown as a message may show it (no credentials)."""
    return spec.with_params(model_path=public_uri(base_model_uri)) if base_model_uri else spec


def chosen_checkpoint(root: Path, best: str, select: str) -> Path:
    """The checkpoint ``export_checkpoint`` names: ``best`` is ``root/best`` (the evaluation step's best one), ``final``
    the newest complete save. The export and the benchmark (whose scores gate the export) take the same one."""
    if select not in ("best", "final"):
        raise KubetuneError([Problem("export_checkpoint", f'must be "best" or "final", got {select!r}')], "cannot export")
    if select == "best":
        return root / best
    ordered = find_checkpoints(root, position_of=checkpoint_naming(root))  # in the order of the backend's naming
    complete = [p for p in ordered if checkpoint_problem(p) is None]  # the newest complete one
    newest = (complete or [root])[-1]  # at mini-trainer's last point, its regular save rather than a best-validation copy
    regular = newest.with_name(newest.name.removesuffix("_best_val_loss"))
    return regular if regular in complete else newest


def export_step(
    trained_model: str | Path,
    checkpoint: str,
    destination: str,
    select: str = "best",
    pointer_dir: str | Path | None = None,
    merge: bool = True,
    spec_path: str | Path | None = None,
    curve_path: str | Path | None = None,
    train_metadata: dict | None = None,
    validation_metadata: dict | None = None,
    base_model_uri: str | None = None,
    overwrite: bool = False,
    modelcar_base_image: str = "",
) -> ExportResult:
    """The pipeline's export step: pick the checkpoint, gather the card's facts, export, leave a pointer.

    ``overwrite``: replace a destination that holds something other than a kubetune export (see
    ``check_destination``); the destination is checked before the base model is fetched."""
    root = Path(trained_model)
    source = chosen_checkpoint(root, checkpoint, select)
    inputs = {"the trained model": root, "the training kwargs": spec_path, "the loss curve": curve_path}
    check_destination(destination, overwrite, source, {name: Path(p) for name, p in inputs.items() if p})
    spec = trained_spec(TrainingSpec.read(spec_path), base_model_uri) if spec_path else None
    curve = LossCurve.read_if_present(curve_path)
    train, validation = train_metadata or {}, validation_metadata or {}
    data = {
        "train_samples": train.get("samples"),
        "train_tokens": train.get("tokens"),
        "validation_samples": validation.get("samples"),
    }
    trained = spec.model_path if spec else base_model_uri  # as a message may show it: no user, password or query
    card = CardFacts(public_uri(trained) if trained else None, spec, curve, data if train else None)
    with tempfile.TemporaryDirectory(prefix="kubetune-base-") as workdir:
        extra: dict[str, str | Path | None] = {"loss_curve.json": curve_path}
        if spec:  # the artifact as the run used it: bound to the base model it trained
            extra["kubetune-spec.json"] = Path(workdir, "kubetune-spec.json")
            extra["kubetune-spec.json"].write_text(spec.to_json())
        merging = merge and is_adapter(source)  # only a merge loads the base model: fetched (s3://) only then
        base = resolve_model(base_model_uri, workdir) if base_model_uri and merging else None
        result = export(
            source, destination, merge, extra, card, base, training_root=root, overwrite=overwrite, base_image=modelcar_base_image
        )
    result = replace(result, checkpoint=str(source.relative_to(root)) if source != root else ".")
    if pointer_dir:  # the model lives at the destination; this artifact says where, and what it is
        pointer = Path(pointer_dir)
        pointer.mkdir(parents=True, exist_ok=True)
        (pointer / "README.md").write_text(result.card)
        (pointer / "location.json").write_text(json.dumps({"uri": result.uri, "manifest": result.manifest}, indent=2))
    return result
