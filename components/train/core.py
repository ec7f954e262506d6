"""Training step: bind the pipeline's paths into the kwargs artifact and run the chosen backend."""

from __future__ import annotations

import json
from pathlib import Path

from kubetune.backends import TrainResult, get_backend
from kubetune.contract import validate_spec
from kubetune.data import tokenized_file
from kubetune.runtime import resolve_model


def train(
    kwargs_path: str | Path,
    model_uri: str,
    train_data: str | Path,
    output_dir: str | Path,
    validation_data: str | Path | None = None,
) -> TrainResult:
    """Run the backend named by the artifact; model, data and output paths come from the pipeline."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    document = json.loads(Path(kwargs_path).read_text(encoding="utf-8"))
    spec = validate_spec(document, require_paths=False)
    bound = {
        "model_path": resolve_model(model_uri, output_dir / "base"),
        "data_path": str(tokenized_file(train_data)),
        "ckpt_output_dir": str(output_dir / "checkpoints"),
    }
    if spec.algorithm == "sft":  # instructlab-training reads data_output_dir/data.jsonl, already processed
        bound.update(data_output_dir=str(Path(train_data)), process_data=False)
    spec = spec.with_params(**bound)
    backend = get_backend(spec.algorithm)
    if spec.algorithm == "lora_sft":
        validation = tokenized_file(validation_data) if validation_data else None
        return backend.train(spec, validation_data=validation)
    return backend.train(spec)
