"""Real training on a CUDA GPU through our training step: sft, osft (on and off), lora_sft with PEFT and with
Unsloth. Every test is marked ``gpu`` and skipped, with the reason, where CUDA is absent (conftest.py); the
GPU proof kit (``benchmarks/gpu_kit.py``) runs them on a lent GPU machine. Peak GPU memory is recorded as a
JUnit property (``peak_memory_gb``)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from kubetune.steps.timeline import read_backend_metrics
from kubetune.steps.train import train
from kubetune.validation import load_spec

pytestmark = [pytest.mark.gpu, pytest.mark.slow]
BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _benchmark(name: str):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gpu_work(tmp_path_factory) -> Path:
    """A Llama-architecture model (hidden 256, 4 layers: head size 64) and prepared chat data with a validation split."""
    bench = _benchmark("train_step")
    work = tmp_path_factory.mktemp("gpu")
    bench.write_model(work / "model", hidden=256, layers=4)
    bench.write_data(work / "model", work, samples=200, validation_ratio=0.1)
    return work


def _train(work: Path, name: str, document: dict):
    kwargs = work / f"{name}.json"
    kwargs.write_text(json.dumps({"effective_batch_size": 8, "max_seq_len": 512, "num_epochs": 2, **document}))
    return train(load_spec(kwargs, require_paths=False), str(work / "model"), work / "train", work / f"out-{name}", work / "val")


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _learned(result) -> None:
    losses = [p.loss for p in read_backend_metrics(result.output_dir).train]
    assert len(losses) >= 2 and losses[-1] < losses[0], losses


def test_sft_trains_on_the_gpu_through_our_step(gpu_work, record_property):
    result = _train(gpu_work, "sft", {"algorithm": "sft", "max_tokens_per_gpu": 4096, "learning_rate": 5e-4})
    rows = _rows(result.output_dir / "training_params_and_metrics_global0.jsonl")
    allocated = max(r["cuda_mem_allocated"] for r in rows if "cuda_mem_allocated" in r)  # instructlab logs no peak
    record_property("peak_memory_gb", allocated)
    assert allocated > 0  # the model lived on the GPU
    assert (result.final_model / "config.json").is_file()
    _learned(result)


@pytest.mark.parametrize("osft", [True, False], ids=["osft-on", "osft-off"])
def test_osft_trains_on_the_gpu_with_validation_through_our_step(gpu_work, record_property, osft):
    document = {"algorithm": "osft", "osft": osft, "max_tokens_per_gpu": 4096, "learning_rate": 5e-4, "validate_at_epoch": True}
    if osft:
        document["unfreeze_rank_ratio"] = 0.5
    result = _train(gpu_work, f"osft-{osft}", document)
    peak = max(r["peak_memory_usage_GB"] for r in _rows(result.output_dir / "training_metrics_0.jsonl"))
    record_property("peak_memory_gb", peak)
    assert peak > 0
    validation = _rows(result.output_dir / "kubetune_validation_0.jsonl")
    assert [r["epoch"] for r in validation][:2] == [1, 2] and all(r["val_loss"] > 0 for r in validation)
    _learned(result)


def test_lora_sft_trains_on_the_gpu_with_peft_through_our_step(gpu_work, record_property):
    import torch

    torch.cuda.reset_peak_memory_stats()
    document = {"algorithm": "lora_sft", "backend": "peft", "learning_rate": 2e-3, "eval_strategy": "epoch"}
    result = _train(gpu_work, "lora-peft", document)
    peak = torch.cuda.max_memory_allocated() / 2**30
    record_property("peak_memory_gb", round(peak, 3))
    assert peak > 0
    assert (result.final_model / "adapter_config.json").is_file()
    history = json.loads((result.output_dir / "trainer_state.json").read_text())["log_history"]
    assert len([e for e in history if "eval_loss" in e]) == 2
    _learned(result)


UNSLOTH_RUN = """
import json, sys
import torch
from kubetune.steps.train import train
from kubetune.validation import load_spec
result = train(load_spec(sys.argv[1], require_paths=False), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5])
print(json.dumps({"unsloth": "unsloth" in sys.modules, "peak_gb": torch.cuda.max_memory_allocated() / 2**30,
                  "final": str(result.final_model)}))
"""


NO_UNSLOTH = importlib.util.find_spec("unsloth") is None


@pytest.mark.skipif(NO_UNSLOTH, reason="Unsloth is not installed (benchmarks/gpu_kit.py installs it)")
def test_lora_sft_trains_through_unsloth_on_the_gpu(gpu_work, record_property):
    """In a fresh process, so that Unsloth being imported proves our step took its Unsloth path."""
    kwargs = gpu_work / "lora-unsloth.json"
    document = {"algorithm": "lora_sft", "effective_batch_size": 8, "max_seq_len": 512, "num_epochs": 2, "learning_rate": 2e-3}
    kwargs.write_text(json.dumps(document))
    out = gpu_work / "out-lora-unsloth"
    args = [str(kwargs), str(gpu_work / "model"), str(gpu_work / "train"), str(out), str(gpu_work / "val")]
    done = subprocess.run([sys.executable, "-c", UNSLOTH_RUN, *args], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    record_property("peak_memory_gb", round(report["peak_gb"], 3))
    assert report["unsloth"] and report["peak_gb"] > 0
    assert (Path(report["final"]) / "adapter_config.json").is_file()
    history = json.loads((out / "checkpoints" / "trainer_state.json").read_text())["log_history"]
    losses = [e["loss"] for e in history if "loss" in e]
    assert losses[-1] < losses[0], losses
