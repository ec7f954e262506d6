"""The memory-plan benchmark: Training Hub's estimator fed our configs, and the plan against a real step's measured peak.

The README's tables are this benchmark's output: its 1B rows and its tiny-model rows are compared line for line."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNPACKED_WHEEL = Path("/tmp/th/training_hub-0.11.2-py3-none-any.whl")  # where a session may already have it


def _bench():
    spec = importlib.util.spec_from_file_location("_memory_plan_bench", ROOT / "benchmarks" / "memory_plan.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return _bench()


@pytest.fixture(scope="module")
def peer_wheel(bench) -> str | None:
    """Training Hub's wheel, or a skip naming why it could not be had (it is not a dependency of kubetune)."""
    pytest.importorskip("mini_trainer", reason="Training Hub's estimator imports mini-trainer (the `osft` extra)")
    if UNPACKED_WHEEL.is_file():
        return str(UNPACKED_WHEEL)
    try:
        bench.peer_source(None)
    except bench.PeerUnavailable as exc:
        pytest.skip(f"Training Hub {bench.PEER_VERSION} cannot be fetched: {exc}")
    return None


def _readme_rows(prefix: str) -> list[str]:
    return [line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith(prefix)]


def test_the_1b_table_runs_end_to_end_with_training_hubs_formula_and_is_the_readmes(bench, peer_wheel):
    out, where = io.StringIO(), ["--training-hub", peer_wheel] if peer_wheel else []
    with contextlib.redirect_stdout(out):
        bench.main(["--models", "llama-3.2-1b", "--no-measure", "--markdown", *where])
    rows = [line for line in out.getvalue().splitlines() if line.startswith("| llama-3.2-1b |")]
    assert len(rows) == len(bench.METHODS) * len(bench.SETTINGS)
    assert "Training Hub's formula, fed the same config" in out.getvalue()
    assert rows == _readme_rows("| llama-3.2-1b |")

    # Training Hub's sft formula by hand for Llama-3.2-1B (its AutoModel: tied head, so no lm_head; all fp32):
    # params + AdamW (2 states) + grads, each / GPUs, + tokens x 4 B x layers x hidden, + logits x 8/3; x 1.1 expected
    config = json.loads((bench.CONFIGS / "llama-3.2-1b.json").read_text())
    params, gpus, tokens = 1_235_814_400, 8, 8192
    subtotal = params * 4 * (1 + 2 + 1) / gpus + tokens * 4 * config["num_hidden_layers"] * config["hidden_size"]
    subtotal += tokens * 4 * config["vocab_size"] * 8 / 3
    module = bench.peer_estimator(bench.peer_source(peer_wheel))
    low, expected, high = bench.peer_estimate(module, bench.CONFIGS / "llama-3.2-1b.json", "sft", bench.SETTINGS[0])
    assert (low, expected, high) == (int(subtotal), int(1.1 * subtotal), int(1.3 * subtotal))


@pytest.fixture(scope="module")
def measured(bench, tmp_path_factory):
    """The embedded tiny model's real steps, one per method, measured once for the tests below."""
    pytest.importorskip("mini_trainer", reason="mini-trainer is the `osft` extra")
    pytest.importorskip("peft", reason="PEFT is the `lora` extra")
    return {row.method: row for row in bench.measure_rows(tmp_path_factory.mktemp("memory"), models=("tiny-llama",))}


def test_the_plans_parameters_and_adamw_states_are_what_a_real_step_holds_and_the_readme_shows_it(bench, measured):
    assert list(measured) == list(bench.METHODS)
    for row in measured.values():
        assert row.parameters[0] == row.parameters[1], row  # frozen base, OSFT factors, LoRA adapters: exact
        assert row.optimizer[0] == pytest.approx(row.optimizer[1], rel=1e-3), row  # + AdamW's step counters
    table = bench.render(bench.measured_table(list(measured.values())), markdown=True)
    assert table.splitlines()[2:] == _readme_rows("| tiny-llama |")


@pytest.mark.parametrize("method", ["sft", "osft", "lora_sft"])
def test_the_plan_is_never_below_a_real_steps_peak_and_within_the_stated_tolerance(bench, measured, method):
    """The README's CPU column: the plan never under the measured peak (an out-of-memory), at most CPU_TOLERANCE over."""
    row = measured[method]
    assert row.measured > 2**20, row  # parameters, AdamW states and activations of a real step were counted
    assert 0 <= row.error <= bench.CPU_TOLERANCE, f"{method}: plan {row.error:+.1%} vs measured"


def test_the_live_tensor_peak_counts_each_storage_once_until_it_is_freed(bench):
    import torch

    tracker = bench.live_tensor_peak()
    with tracker:
        a = torch.zeros(1024)  # 4 KiB
        view = a[:10]  # same storage
        b = a * 2  # 4 KiB more
        del a, view, b
        c = torch.zeros(256)  # 1 KiB
    assert (tracker.peak, tracker.current) == (8192, 1024)
    del c
    assert tracker.current == 0


def test_update_readme_replaces_the_tables_and_the_run_date_and_nothing_else(bench, tmp_path):
    readme = tmp_path / "README.md"
    old = "| model | method | tokens | kubetune plan (MiB) | measured peak (MiB) | plan error |\n|---|---|---|---|---|---|\n| x |"
    readme.write_text(f"# k\n\n## Memory plan\n\nRun on 2000-01-01. Columns:\n\n{old}\n\nafter\n")
    row = bench.MeasuredRow("tiny-llama", "sft", 512, 3 * 2**20, 2 * 2**20, (1, 1), (2, 2))
    bench.update_readme(readme, [bench.measured_table([row])], "2026-11-25")
    new = bench.render(bench.measured_table([row]), markdown=True)
    assert readme.read_text() == f"# k\n\n## Memory plan\n\nRun on 2026-11-25. Columns:\n\n{new}\n\nafter\n"


def test_memtracker_agrees_on_a_full_step_but_refuses_frozen_parameters_hence_our_own_tracker(bench):
    """Why ``live_tensor_peak``: torch's MemTracker counts the same peak of two steps where every parameter trains,
    and raises where one is frozen (LoRA's base, OSFT's frozen factors)."""
    import torch
    from torch.distributed._tools.mem_tracker import MemTracker

    def peak(tracker: str, frozen: bool = False) -> int:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 8))
        model[0].weight.requires_grad_(not frozen)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
        x = torch.randn(32, 64)
        if tracker == "ours":
            mode = bench.live_tensor_peak()
            for tensor in (*model.parameters(), x):
                mode.add(tensor)
        else:
            mode = MemTracker()
            mode.track_external(model, optimizer, x)
        with mode:
            for _ in range(2):
                if tracker != "ours":
                    mode.reset_mod_stats()  # MemTracker refuses a second iteration otherwise
                model(x).sum().backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        return mode.peak if tracker == "ours" else mode.get_tracker_snapshot("peak")[torch.device("cpu")]["Total"]

    assert peak("ours") == peak("MemTracker") > 0
    with pytest.raises(RuntimeError, match="doesn't require gradient"):
        peak("MemTracker", frozen=True)
    assert peak("ours", frozen=True) < peak("ours")


def test_mini_trainers_own_non_distributed_osft_loader_fails_so_the_benchmark_takes_its_steps_itself(tmp_path, monkeypatch):
    """mini-trainer 0.9.0's setup_model without torch.distributed passes the model path twice; when a release fixes
    it, ``build_for_step`` can call it instead of repeating its steps."""
    pytest.importorskip("mini_trainer", reason="mini-trainer is the `osft` extra")
    from mini_trainer.setup_model_for_training import setup_model
    from transformers.loss import loss_utils

    from kubetune.embedded.tiny_model import write_tiny_model

    monkeypatch.setenv("TESTING", "true")  # sdpa: no flash-attn here
    # setup_model patches transformers' cross-entropy to reduce nothing, for the whole process: put it back after
    monkeypatch.setattr(loss_utils, "fixed_cross_entropy", loss_utils.fixed_cross_entropy)
    with pytest.raises(TypeError, match="multiple values for argument 'pretrained_model_name_or_path'"):
        setup_model(str(write_tiny_model(tmp_path / "tiny")), osft=True, osft_rank_ratio=0.75)
