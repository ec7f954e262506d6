"""``kubetune plan`` and ``kubetune validate --model``: the plan of a large real model's config (no weights), and the
one-line refusal (exit code 2) with the numbers and a suggestion when it exceeds the stated GPU memory."""

import json
import re
from pathlib import Path

from typer.testing import CliRunner

from kubetune.cli import app

CONFIGS = Path(__file__).resolve().parents[1] / "memory" / "configs"
SFT = {"algorithm": "sft", "max_seq_len": 4096, "max_tokens_per_gpu": 64000, "effective_batch_size": 128, "learning_rate": 1e-5}


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_plan_refuses_70b_sft_on_8_gpus_of_80_gib_after_printing_the_plan(tmp_path):
    spec = tmp_path / "sft.json"
    spec.write_text(json.dumps(SFT))
    result = run("plan", spec, "--model", CONFIGS / "llama-3.1-70b.json", "--gpus", 8, "--gpu-memory", 80)
    assert result.exit_code == 2
    table, refusal = result.output.rsplit("\n", 2)[0], result.output.strip().splitlines()[-1]
    assert "| activations |" in table and "traced" in table and "Does not fit" in table
    assert re.fullmatch(
        r"memory plan: needs \d+\.\d GiB per GPU, has 80\.0 GiB \(.*\) \(.*max_tokens_per_gpu to \d+.*\)", refusal
    )
    # the README's example (Memory plan)
    assert refusal.startswith("memory plan: needs 246.8 GiB per GPU, has 80.0 GiB (")
    suggested = "(use fsdp_options.sharding_strategy FULL_SHARD on 2 node(s) of 8 GPUs and set max_tokens_per_gpu to 14592, "
    assert suggested in refusal


def test_validate_with_a_model_plans_and_passes_a_spec_that_fits(tmp_path):
    spec = tmp_path / "sft.json"
    spec.write_text(json.dumps({**SFT, "max_tokens_per_gpu": 8192}))
    result = run("validate", spec, "--pipeline", "--model", CONFIGS / "llama-3.2-1b.json", "--gpu-memory", 80)
    assert result.exit_code == 0, result.output
    assert "Fits: needs" in result.output and '"algorithm": "sft"' in result.output


def test_a_gpu_memory_that_is_not_a_size_is_a_usage_error_naming_the_option(tmp_path):
    spec = tmp_path / "sft.json"
    spec.write_text(json.dumps(SFT))
    for value in ("inf", "nan", "-1"):
        result = run("plan", spec, "--model", "kubetune://tiny-llama", "--gpu-memory", value)
        assert result.exit_code == 2 and "--gpu-memory" in result.output, (value, result.output)
