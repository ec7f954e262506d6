"""What the two torchrun backends (instructlab-training, mini-trainer) share: launch through their own
``run_training`` (which spawns torchrun), CPU mode where CUDA is absent, and reading back what they saved."""

from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path
from typing import Any, ClassVar

from kubetune.backends.base import Backend, TrainingRun, TrainResult
from kubetune.backends.cpu_mode import free_port, launch_env, wanted
from kubetune.backends.rules import nproc_notice
from kubetune.checkpoints import Position, hf_save_problem, samples_position, set_aside_incomplete
from kubetune.console import say
from kubetune.errors import KubetuneError, Problem

# hf_format/samples_1200, samples_1200.0 (mini-trainer), samples_1200.0_best_val_loss (a best-validation copy)
_SAMPLES = re.compile(r"samples_(\d+(?:\.\d+)?)(_best_val_loss)?$")


def flash_attn_missing() -> bool:
    return importlib.util.find_spec("flash_attn") is None


class TorchrunBackend(Backend):
    """A backend whose ``run_training(torch_args, train_args)`` spawns torchrun."""

    launcher: ClassVar[str]  # the module whose ``run_training`` starts training
    spawns_torchrun = True

    def bind_data(self, spec, train_data: Path, output_dir: Path, validation_data: Path | None) -> dict[str, Any]:
        """SIGTERM (run cancelled, pod pre-empted): save, then stop; Training Hub's enable_jit_checkpoint: false
        turns it off (the backend's own ``on_demand_checkpointing``, where the spec leaves it out)."""
        if "on_demand_checkpointing" in spec.backend_kwargs:
            return {}
        return {"on_demand_checkpointing": spec.params.get("enable_jit_checkpoint", True)}

    def local_params(self, spec) -> dict[str, Any]:
        """Parameters the step sets where the spec leaves them open, so that the launch works here: one process
        and a free rendezvous port on a CPU (parallel runs must not meet on 29500)."""
        p = spec.params
        local: dict[str, Any] = {}
        if wanted() and p.get("nproc_per_node") in (None, "auto", "gpu"):
            local["nproc_per_node"] = 1
        elif wanted() and str(p.get("nproc_per_node")) != "1":  # ranks would diverge on gloo and wait forever
            raise KubetuneError(
                [Problem("nproc_per_node", "must be 1 in CPU mode (no CUDA GPU here: one process)", "remove it or set 1")],
                f"cannot train {spec.algorithm}",
            )
        if not p.get("rdzv_endpoint") and not p.get("master_addr") and p.get("nnodes", 1) == 1:
            local["rdzv_endpoint"] = f"127.0.0.1:{free_port()}"
        return local

    def launch(self, spec) -> tuple[Any, Any]:
        """The backend's configuration objects for this launch (after the line on our ``nproc_per_node`` default)."""
        if notice := nproc_notice(spec.params):
            say(notice)
        if local := self.local_params(spec):
            spec = spec.with_params(**local)
        return self.build(spec)

    def output_dir(self, train_args) -> Path:
        raise NotImplementedError

    def checkpoint_position(self, path: Path) -> Position | None:
        """``hf_format/samples_N``: N samples seen."""
        return samples_position(path)

    def train(self, spec, run: TrainingRun | None = None) -> TrainResult:
        """The backend's own torchrun launch (it validates on its own split: ``run`` adds nothing)."""
        return self.train_launched(*self.launch(spec))

    def set_aside(self, torch_args, train_args) -> None:
        """On node 0: the saves a kill left half-written, moved to ``incomplete/`` (one line each)."""
        if getattr(torch_args, "node_rank", 0) in (0, None):
            set_aside_incomplete(self.output_dir(train_args), say)

    def train_launched(self, torch_args, train_args) -> TrainResult:
        """Run the backend's ``run_training`` on its configuration objects; what it saved, read back (complete
        saves only). Before the launch, node 0 sets aside the saves a kill left half-written (``incomplete/``):
        the backend then resumes from the newest complete full state, or starts afresh."""
        self.set_aside(torch_args, train_args)
        run_training = importlib.import_module(self.launcher).run_training
        with launch_env(self.name, say):
            run_training(torch_args=torch_args, train_args=train_args)
        out = self.output_dir(train_args)
        checkpoints = complete_models(out)
        return TrainResult(out, final_model(checkpoints) or out, checkpoints)


def saved_models(output_dir: Path) -> list[Path]:
    """The HF-format models a backend saved, oldest first by samples seen (a best-validation copy right after
    the save of the same point)."""

    def order(path: Path) -> tuple[float, int]:
        found = _SAMPLES.match(path.name)
        if found is None:  # instructlab's last_epoch (keep_last_checkpoint_only): after every numbered save
            return (float("inf"), 0)
        return (float(found.group(1)), 1 if found.group(2) else 0)

    folder = output_dir / "hf_format"
    found = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")] if folder.is_dir() else []
    return sorted((p for p in found if _SAMPLES.match(p.name) or p.name == "last_epoch"), key=order)


def complete_models(output_dir: Path) -> list[Path]:
    """``saved_models`` less those a kill left half-written: what the step reports, evaluates and exports."""
    return [p for p in saved_models(output_dir) if hf_save_problem(p) is None]


def final_model(checkpoints: list[Path]) -> Path | None:
    """The model at the end of training: the save with the most samples seen (``checkpoints`` in
    ``saved_models`` order), the regular one where a best-validation copy of the same point exists. A copy is
    final only when no regular save holds its point: mini-trainer skips its final save when the last validation
    has just written a best copy of the same weights."""
    if not checkpoints:
        return None
    newest = checkpoints[-1]
    regular = newest.with_name(newest.name.removesuffix("_best_val_loss"))
    return regular if regular in checkpoints else newest
