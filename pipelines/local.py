"""Run a pipeline on this machine with ``kfp.local`` (offline, CPU), in the current Python environment."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def run_local(output_dir: str | Path, **arguments: Any) -> dict[str, str]:
    """Run ``finetune`` locally; returns where the exported model, kwargs artifact and loss curve are."""
    from kfp import local
    from kubetune.pipelines.finetune import finetune

    output_dir = Path(output_dir).resolve()
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(output_dir / "kfp-root"))
    run = finetune(**arguments)
    curve = json.loads(Path(run.outputs["loss_curve"].path).read_text())
    return {
        "exported_model": run.outputs["model"].path,
        "kwargs_artifact": run.outputs["kwargs"].path,
        "loss_curve": run.outputs["loss_curve"].path,
        "report": run.outputs["eval_report"].path,
        "best_checkpoint": curve["best"]["checkpoint"],
        "validation_loss": {p["checkpoint"]: p["loss"] for p in curve["points"]},
        "overfitting_after": (curve["overfitting"] or {}).get("checkpoint"),
    }
