"""``sft`` through instructlab-training (full fine-tuning)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kubetune.backends.base import TrainResult
from kubetune.backends.cpu_mode import environment
from kubetune.backends.rules import TORCHRUN_NAMES, effective, torchrun_kwargs
from kubetune.backends.torchrun import TorchrunBackend, flash_attn_missing
from kubetune.backends.tracking import tracking_env
from kubetune.contract.catalog import Catalog
from kubetune.errors import Problem


class InstructLabSFT(TorchrunBackend):
    algorithm = "sft"
    name = "instructlab-training"
    catalog_name = "instructlab-training"
    config_source = ("instructlab.training", "config")
    launcher = "instructlab.training"
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
        if params.get("is_pretraining") and params.get("block_size") is None:
            problems.append(Problem("block_size", "is required when is_pretraining is true"))
        return problems

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
        """Where flash-attn is missing (a CPU, an image without it), sdpa attention unless the spec says otherwise:
        instructlab-training would stop asking for flash_attention_2."""
        local = super().local_params(spec)
        if flash_attn_missing() and "disable_flash_attn" not in spec.backend_kwargs:
            print("[kubetune] flash-attn is not installed: instructlab-training uses sdpa (disable_flash_attn)", flush=True)
            local["disable_flash_attn"] = True
        return local

    def output_dir(self, train_args) -> Path:
        return Path(train_args.ckpt_output_dir)

    def train(self, spec) -> TrainResult:
        """instructlab-training's own run; it turns trackers on from its parameters and the environment itself."""
        with environment(tracking_env(spec.params, spec.params["ckpt_output_dir"])):
            return super().train(spec)
