"""A fourth backend in one file, for ``tests/backends/test_toy_backend.py``: ``toy_sft``, a few steps of a plain
torch loop over the prepared data, saving Hugging Face checkpoints under its own naming (``step-N``) and a metrics
file it reads back.

Registering it is one entry in ``kubetune.backends.registry.BACKENDS``; nothing else in kubetune knows it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pydantic import Field

from kubetune.backends.base import Backend, TrainingRun, TrainResult
from kubetune.backends.metrics import BackendSeries, Point, finite, json_rows, metrics_file
from kubetune.checkpoints import Position
from kubetune.contract.catalog import Catalog
from kubetune.contract.params import CommonParams, PositiveInt
from kubetune.data.tokenize import read_jsonl
from kubetune.errors import Problem

METRICS_FILE = "toy_metrics.jsonl"


class ToyParams(CommonParams):
    """``toy_sft``'s curated parameters: the common ones, and its own two."""

    toy_steps: PositiveInt | None = Field(None, description="Optimizer steps, one sample each.")
    save_every: PositiveInt | None = Field(None, description="Save a checkpoint every N steps.")


class ToyBackend(Backend):
    algorithm = "toy_sft"
    name = "toy"
    catalog_name = "toy"
    params_model = ToyParams
    required_params = ("toy_steps",)

    def catalog(self) -> Catalog:
        """No configuration class of its own: every setting is a curated parameter, no backend kwargs."""
        return Catalog(self.name, {}, {}, origin="toy")

    def check(self, params: dict[str, Any], kwargs: dict[str, Any], catalog: Catalog, pipeline: bool = False) -> list[Problem]:
        if params.get("save_every", 1) > params.get("toy_steps", 1):
            return [Problem("save_every", "must not exceed toy_steps (no checkpoint would be saved)")]
        return []

    def train(self, spec, run: TrainingRun | None = None) -> TrainResult:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        p = spec.params
        out = Path(p["ckpt_output_dir"])
        out.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(p.get("seed", 0))
        model = AutoModelForCausalLM.from_pretrained(p["model_path"], dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(p["model_path"])
        rows = list(read_jsonl(p["data_path"]))
        optimizer = torch.optim.AdamW(model.parameters(), lr=p.get("learning_rate", 1e-3))
        every, checkpoints = p.get("save_every", 1), []
        with (out / METRICS_FILE).open("w", encoding="utf-8") as log:
            for step in range(1, p["toy_steps"] + 1):
                row = rows[(step - 1) % len(rows)]
                ids, labels = torch.tensor([row["input_ids"]]), torch.tensor([row["labels"]])
                loss = model(input_ids=ids, labels=labels).loss
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
                log.write(json.dumps({"step": step, "samples": step, "loss": loss.item()}) + "\n")
                if step % every == 0:
                    checkpoints.append(out / f"step-{step}")
                    model.save_pretrained(checkpoints[-1])
                    tokenizer.save_pretrained(checkpoints[-1])
        return TrainResult(out, checkpoints[-1], checkpoints)

    def checkpoint_position(self, path: Path) -> Position | None:
        """Its own naming: ``step-N`` after N optimizer steps."""
        match = re.fullmatch(r"step-(\d+)", path.name)
        return Position(step=int(match.group(1))) if match else None

    def read_metrics(self, output_dir: Path) -> BackendSeries | None:
        if (found := metrics_file(output_dir, METRICS_FILE)) is None:
            return None
        rows = json_rows(found)
        return BackendSeries(self.name, [Point(float(r["loss"]), r["step"], r["samples"]) for r in rows if finite(r.get("loss"))])
