"""``sft`` through instructlab-training (full fine-tuning)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kubetune.backends.base import TrainingRun, TrainResult
from kubetune.backends.cpu_mode import environment
from kubetune.backends.metrics import BackendSeries, Point, finite, json_rows, metrics_file
from kubetune.backends.needs import DEEPSPEED, LIGER
from kubetune.backends.resume import require_every_sample, resumable_instructlab
from kubetune.backends.rules import TORCHRUN_NAMES, effective, pretraining_problems, torchrun_kwargs
from kubetune.backends.torchrun import TorchrunBackend, flash_attn_missing, say
from kubetune.backends.tracking import tracking_env
from kubetune.contract.catalog import Catalog
from kubetune.contract.params import REQUIRED, SFTParams
from kubetune.errors import KubetuneError, Problem


class InstructLabSFT(TorchrunBackend):
    algorithm = "sft"
    params_model = SFTParams
    required_params = REQUIRED["sft"]
    name = "instructlab-training"
    installs = ("instructlab.training", "sft")
    catalog_name = "instructlab-training"
    config_source = ("instructlab.training", "config")
    launcher = "instructlab.training"
    needs = {"use_liger": LIGER, "distributed_backend": DEEPSPEED._replace(asks=lambda v: v == "deepspeed")}
    renames = {
        "max_batch_len": "max_tokens_per_gpu",
        "adamw_eps": "eps",
        "adamw_weight_decay": "weight_decay",
        "random_seed": "seed",
    }
    managed = {
        "callbacks": "Python callbacks cannot travel in a JSON artifact",
        "pretraining_config": "set is_pretraining and block_size instead",
        "chat_tmpl_path": "kubetune tokenizes the data with the model's own chat template; "
        "another template at training time would not match it",
        "use_legacy_tmpl": "kubetune tokenizes the data with the model's own chat template; "
        "another template at training time would not match it",
    }

    def check(self, params: dict[str, Any], kwargs: dict[str, Any], catalog: Catalog, pipeline: bool = False) -> list[Problem]:
        problems = []
        if (params.get("beta1") is None) != (params.get("beta2") is None):
            given = "beta1" if params.get("beta1") is not None else "beta2"
            problems.append(Problem(given, "needs its partner: give both beta1 and beta2 (instructlab takes a pair)"))
        if "adamw_betas" in kwargs and (params.get("beta1") is not None or params.get("beta2") is not None):
            problems.append(Problem("adamw_betas", "repeats beta1/beta2; use beta1 and beta2"))
        split = effective(kwargs, catalog, "validation_split", 0.0)
        if isinstance(split, (int, float)):
            if not 0.0 <= split < 1.0:
                problems.append(Problem("validation_split", "must be in [0, 1)"))
            elif split > 0 and not (effective(kwargs, catalog, "validation_frequency") or 0) > 0:
                problems.append(Problem("validation_frequency", "must be > 0 when validation_split is set"))
        return problems + pretraining_problems(params)

    def bind_data(self, spec, train_data: Path, output_dir: Path, validation_data: Path | None) -> dict[str, Any]:
        """instructlab-training reads ``data_output_dir/data.jsonl``: the prepared split, already processed."""
        bound = super().bind_data(spec, train_data, output_dir, validation_data)
        return {**bound, "data_output_dir": str(train_data), "process_data": False}

    def configs(self, spec, config):
        """instructlab-training's ``TorchrunArgs`` and ``TrainingArgs`` for ``spec``, from its ``config`` module."""
        args = self.by_class(spec).get("instructlab.TrainingArgs", {})
        p = spec.params
        args.setdefault("data_output_dir", p.get("data_output_dir") or os.path.join(p["ckpt_output_dir"], "data"))
        args.setdefault("max_batch_len", p.get("max_seq_len"))
        if p.get("beta1") is not None:
            args["adamw_betas"] = (p["beta1"], p["beta2"])
        if p.get("is_pretraining"):
            extra = {"document_column_name": p["document_column_name"]} if p.get("document_column_name") else {}
            args["pretraining_config"] = config.PretrainingConfig(block_size=p["block_size"], **extra)
        torch_args = config.TorchrunArgs(**torchrun_kwargs(p, TORCHRUN_NAMES))
        return torch_args, config.TrainingArgs(**args)

    def local_params(self, spec) -> dict[str, Any]:
        """Where flash-attn is missing (a CPU, an image without it), sdpa attention: instructlab-training would
        stop asking for flash_attention_2. A spec that asks for flash-attn there (``disable_flash_attn: false``)
        is refused rather than silently overridden."""
        local = super().local_params(spec)
        if flash_attn_missing():
            if spec.backend_kwargs.get("disable_flash_attn") is False:
                raise KubetuneError(
                    [Problem("disable_flash_attn", "is false but flash-attn is not installed here", FLASH_ATTN_HINT)],
                    "cannot train sft",
                )
            if "disable_flash_attn" not in spec.backend_kwargs:
                say("[kubetune] flash-attn is not installed: instructlab-training uses sdpa (disable_flash_attn)")
                local["disable_flash_attn"] = True
        return local

    def train_launched(self, torch_args, train_args) -> TrainResult:
        """instructlab-training resumes by itself from the newest ``full_state/epoch_N`` in ``ckpt_output_dir``
        (a restarted step finds its own there). Metrics: ``resumed_from`` (that full state, or "") and
        ``full_state_saved`` (the full state an on-demand save of this run wrote on a signal, or "")."""
        out = Path(train_args.ckpt_output_dir)
        self.set_aside(torch_args, train_args)  # first: what it resumes from is then complete
        resumable_instructlab(out, newest_full_state, say)  # then: a mid-epoch save it would resume wrongly, set aside
        resumed = newest_full_state(out)
        stamp = _stamp(resumed)
        result = super().train_launched(torch_args, train_args)
        saved = newest_full_state(out)
        fresh = saved is not None and (saved != resumed or _stamp(saved) != stamp) and "global_step" in _metadata(saved)
        result.metrics.update(
            resumed_from=str(resumed.relative_to(out)) if resumed else "",
            full_state_saved=str(saved.relative_to(out)) if fresh else "",
        )
        if not fresh and not train_args.keep_last_checkpoint_only:  # ended by itself, not by a signal's save
            data = Path(train_args.data_output_dir, "data.jsonl")
            require_every_sample(result.final_model, data, train_args.num_epochs, train_args)
        return result

    def output_dir(self, train_args) -> Path:
        return Path(train_args.ckpt_output_dir)

    def train(self, spec, run: TrainingRun | None = None) -> TrainResult:
        """instructlab-training's own run; it turns trackers on from its parameters and the environment itself."""
        with environment(tracking_env(spec.params, spec.params["ckpt_output_dir"])):
            return super().train(spec, run)

    def read_metrics(self, output_dir: Path) -> BackendSeries | None:
        found = metrics_file(output_dir, METRICS_FILE)
        return read_instructlab(found) if found else None


METRICS_FILE = "training_params_and_metrics_global0.jsonl"  # rank 0's: avg_loss, samples_seen; val_loss rows


def read_instructlab(path: Path) -> BackendSeries:
    """instructlab-training appends to its file: a run resumed mid-epoch continues the steps; a run resumed from an
    epoch-end state numbers its steps from 1 again while its samples go on (``samples_seen`` is restored, its
    ``global_step`` is not): its steps are shifted to follow the earlier ones; a run that started again from scratch
    in the same folder (its samples start over too) replaces the rows from its first step on."""
    series = BackendSeries("instructlab-training")
    shift = 0  # added to the steps of a resumed run that numbers them from 1 again
    for row in json_rows(path):
        step = row.get("step")
        if isinstance(step, int):
            step += shift
        if finite(row.get("avg_loss")):
            samples = row.get("samples_seen")
            last = series.train[-1] if series.train else None
            if isinstance(step, int) and last is not None and (last.step or 0) >= step:
                if isinstance(samples, int) and last.samples is not None and samples > last.samples:  # resumed
                    shift += (last.step or 0) - step + 1
                    step = (last.step or 0) + 1
                else:  # started again
                    series.train = [p for p in series.train if p.step is None or p.step < step]
                    series.validation = [p for p in series.validation if p.step is None or p.step < step]
            series.train.append(Point(float(row["avg_loss"]), step, samples))
        if finite(row.get("val_loss")):
            series.validation = [p for p in series.validation if p.step is None or p.step != step]
            series.validation.append(Point(float(row["val_loss"]), step))
    for p in series.validation:
        p.samples = series.samples_at_step(p.step) if p.step is not None else None
    return series


FLASH_ATTN_HINT = "remove it (kubetune then uses sdpa attention) or train on an image with flash-attn"


def newest_full_state(output_dir: Path) -> Path | None:
    """The full state instructlab-training 0.16.2 loads when it starts (``load_latest_full_state``): the
    ``full_state/*_N`` folder with the largest N."""
    folder = output_dir / "full_state"
    found = [d for d in folder.iterdir() if d.is_dir() and d.name.rsplit("_", 1)[-1].isdigit()] if folder.is_dir() else []
    return max(found, key=lambda d: int(d.name.rsplit("_", 1)[-1]), default=None)


def _metadata(state: Path) -> dict[str, Any]:
    import torch

    try:
        found = torch.load(state / "training_metadata.json", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _stamp(state: Path | None) -> int | None:
    meta = state / "training_metadata.json" if state else None
    return meta.stat().st_mtime_ns if meta and meta.is_file() else None
