"""A restarted sft/osft step never trains less than asked.

Both torchrun backends resume a mid-epoch full state by skipping batches, and both count them wrongly:
mini-trainer 0.9.0 skips ``step`` batches (counted from the start of training) from the start of the saved
epoch, so a save in any epoch after the first skips the rest of that epoch untrained; instructlab-training 0.16.2
skips ``global_step`` batches (also counted from the first epoch) from the start of the saved epoch, and records a
save made before its optimizer step one ahead (a batch it never trained is skipped, in the first epoch too). Such a
full state is moved to ``not-resumable/<folder>/<name>`` beside it (never deleted), one line says why, and the
backend starts from the newest state it resumes correctly, or from the beginning. After training,
``require_every_sample`` fails an epoch-mode run that ended by itself having seen fewer samples than it was asked.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubetune.checkpoints import latest_full_state
from kubetune.errors import KubetuneError, Problem

NOT_RESUMABLE_DIR = "not-resumable"  # skipped by evaluation and export (checkpoints.SKIPPED_DIRS), not published
Say = Callable[[str], None]


def _load(path: Path) -> dict[str, Any]:
    import torch

    try:
        found = torch.load(path, weights_only=False, map_location="cpu")  # kubetune's own training output
    except (OSError, RuntimeError, EOFError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def mini_trainer_skip(state: Path) -> str | None:
    """Why mini-trainer 0.9.0 would skip untrained batches resuming ``full_state_checkpoints/step_N``, else None."""
    meta = _load(state / "training_state.pt")
    epoch, step = meta.get("epoch", 0), meta.get("step", 0)
    if not epoch:
        return None  # the first epoch: the steps it skips are the ones it trained
    return (
        f"mini-trainer 0.9.0 would skip {step} batches (its steps since the start of training) from the start of "
        f"epoch {epoch + 1}, leaving the rest of that epoch untrained"
    )


def instructlab_skip(state: Path) -> str | None:
    """Why instructlab-training 0.16.2 would skip untrained batches resuming ``full_state/epoch_N``, else None
    (an end-of-epoch save, which resumes at the start of the next epoch)."""
    meta = _load(state / "training_metadata.json")
    if "global_step" not in meta:
        return None
    epoch, step = meta.get("current_epoch", 0), meta["global_step"]
    if epoch:
        return (
            f"instructlab-training 0.16.2 would skip {step} batches (its steps since the first epoch) from the start of "
            f"epoch {epoch + 1}, leaving batches of it untrained"
        )
    return (
        f"instructlab-training 0.16.2 records a mid-epoch save's step ({step}) one ahead when the signal came before "
        "the optimizer step, and would then skip a batch it never trained"
    )


def set_aside(state: Path, output_dir: Path, reason: str, backend: str, say: Say) -> Path:
    """Move ``state`` to ``output_dir/not-resumable/<folder>/`` (a free name: nothing there is replaced), one loud line."""
    folder = output_dir / NOT_RESUMABLE_DIR / state.parent.name
    folder.mkdir(parents=True, exist_ok=True)
    target, n = folder / state.name, 1
    while target.exists():
        target, n = folder / f"{state.name}.{n}", n + 1
    state.rename(target)
    say(
        f"[kubetune] NOT RESUMING {state.parent.name}/{state.name} ({backend} bug: {reason}); moved to {target}; "
        "training starts again from the newest state it resumes correctly (else from the beginning), so the model "
        "gets every step asked for"
    )
    return target


def set_aside_later_models(output_dir: Path, samples: int, say: Say) -> None:
    """The ``hf_format/samples_N`` models past ``samples`` (where training starts again) were saved by the attempt
    being abandoned: moved to ``not-resumable/hf_format/`` so that none of them mixes into the new run's result."""
    folder = output_dir / "hf_format"
    for model in sorted(folder.iterdir() if folder.is_dir() else []):
        if model.is_dir() and (seen := samples_seen(model)) is not None and seen > samples:
            target = output_dir / NOT_RESUMABLE_DIR / "hf_format" / model.name
            n = 1
            while target.exists():
                target, n = target.with_name(f"{model.name}.{n}"), n + 1
            target.parent.mkdir(parents=True, exist_ok=True)
            model.rename(target)
            say(f"[kubetune] set aside hf_format/{model.name} of the abandoned attempt; moved to {target}")


def resumable_mini_trainer(resume: str | None, output_dir: Path, say: Say) -> str | None:
    """The full state mini-trainer may resume (``resume`` or an older one in ``output_dir``), after setting aside each
    newer one it would resume wrongly (and the models saved after the point it then starts from); None: start from
    the beginning."""
    moved = False
    while resume and (reason := mini_trainer_skip(Path(resume))):
        if not Path(resume).is_relative_to(output_dir):
            raise KubetuneError(
                [Problem("resume_from_full_state_checkpoint", f"{resume}: {reason}", "resume from a first-epoch save")],
                "cannot train osft",
            )
        set_aside(Path(resume), output_dir, reason, "mini-trainer", say)
        resume, moved = latest_full_state(output_dir, say=lambda _line: None), True
    if moved:
        start = _load(Path(resume) / "training_state.pt").get("total_samples_accumulated", 0) if resume else 0
        set_aside_later_models(output_dir, int(start), say)
    return resume


def resumable_instructlab(output_dir: Path, newest: Callable[[Path], Path | None], say: Say) -> None:
    """Set aside each newest ``full_state/epoch_N`` instructlab-training would resume wrongly (``newest``: the one it
    loads), and the models saved after the point it then starts from."""
    moved = False
    while (state := newest(output_dir)) is not None and (reason := instructlab_skip(state)):
        set_aside(state, output_dir, reason, "instructlab-training", say)
        moved = True
    if moved:
        start = _load(state / "training_metadata.json").get("samples_seen", 0) if state else 0
        set_aside_later_models(output_dir, int(start), say)


def samples_seen(model: Path) -> int | None:
    """N of an ``hf_format/samples_N`` save (``samples_N.0``, ``samples_N_best_val_loss``), else None."""
    found = re.match(r"samples_(\d+)", model.name)
    return int(found.group(1)) if found else None


def train_samples(data_file: Path) -> int:
    with data_file.open("rb") as f:
        return sum(1 for line in f if line.strip())


def require_every_sample(final_model: Path | None, data_file: Path, epochs: int, train_args: Any) -> None:
    """Nothing, unless an epoch-mode run that ended by itself (call it only then) saved its last model having seen
    fewer than ``epochs`` x the training samples: then the step fails with one line. Not judged where the count of
    training samples is not the file's (a validation split taken from it, pretraining blocks) or unknown."""
    if getattr(train_args, "pretraining_config", None) or (getattr(train_args, "validation_split", 0) or 0) > 0:
        return
    seen = samples_seen(final_model) if final_model else None
    if seen is None or not data_file.is_file():
        return
    asked = epochs * train_samples(data_file)
    if seen < asked:
        raise KubetuneError(
            [
                Problem(
                    "training",
                    f"ended having seen {seen} samples, fewer than the {asked} asked ({epochs} epochs of {asked // epochs})",
                    "run the step again in a fresh output folder",
                )
            ],
            "trained less than asked",
        )
