"""What makes a mirror one run's (recorded in each marker; a restore refuses another run's mirror)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from kubetune import s3
from kubetune.contract import TrainingSpec
from kubetune.data import tokenized_file

# spec fields a resume may change (duration, saving, logging, tracking, placement, paths): left out of the run's hash
MAY_CHANGE = frozenset({
    "num_epochs", "max_steps", "max_tokens_per_gpu", "checkpoint_storage", "enable_jit_checkpoint", "save_samples",
    "save_steps", "save_total_limit", "checkpoint_at_epoch", "accelerate_full_state_at_epoch", "save_final_checkpoint",
    "eval_steps", "logging_steps", "wandb_project", "wandb_entity", "wandb_run_name", "mlflow_tracking_uri",
    "mlflow_experiment_name", "mlflow_run_name", "tensorboard_log_dir", "nproc_per_node", "nnodes", "node_rank", "rdzv_id",
    "rdzv_endpoint", "master_addr", "master_port", "model_path", "data_path", "ckpt_output_dir", "data_output_dir",
    "eval_data_path", "on_demand_checkpointing",
})  # fmt: skip


def data_fingerprint(path: Path) -> str:
    """The prepared data's size and the SHA-256 of its first and last MiB (a file of GBs is not read whole)."""
    try:
        with path.open("rb") as file:
            size = os.fstat(file.fileno()).st_size
            digest = hashlib.sha256(file.read(2**20))
            file.seek(max(size - 2**20, 0))
            digest.update(file.read(2**20))
    except OSError:
        return "absent"
    return f"{size} bytes, sha256 {digest.hexdigest()[:16]}"


def run_identity(spec: TrainingSpec, model_uri: str, train_data: str | Path) -> dict[str, str]:
    """What makes a mirror this run's: the algorithm, the base model, the training data (``data_fingerprint``) and a
    hash of the spec but ``MAY_CHANGE``."""
    kept = {k: v for k, v in spec.params.items() if k not in MAY_CHANGE}
    kept["backend_kwargs"] = {k: v for k, v in spec.backend_kwargs.items() if k not in MAY_CHANGE}
    return {
        "algorithm": spec.algorithm,
        "base model": s3.public_uri(model_uri).split("?")[0].split("#")[0],
        "training data": data_fingerprint(tokenized_file(train_data)),
        "spec": hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16],
    }


def other_run(theirs: object, ours: dict[str, str]) -> str | None:
    """How a marker's run (``theirs``) differs from this one, in words, else None."""
    recorded = theirs if isinstance(theirs, dict) else {}
    for item, value in ours.items():
        if recorded.get(item) != value:
            return f"is another run's save: its {item} is {recorded.get(item, 'not recorded')!r}, this run's {value!r}"
    return None
