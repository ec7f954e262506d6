"""The benchmark step on a LoRA adapter of the tiny model, checked against lm-eval's own CLI on the same model and
tasks; the held-out documents; delta and forgetting."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kubetune.benchmark.results import BenchmarkResults, TaskScore
from kubetune.benchmark.tasks import documents, write_held_out_tasks
from kubetune.steps.benchmark import benchmark_step

LIMIT = 6


@pytest.fixture(scope="module")
def validation(prepared_validation):
    return prepared_validation(24)


@pytest.fixture(scope="module")
def adapter_run(tmp_path_factory, tiny_model, validation):
    """A randomly initialised LoRA adapter on the tiny model (so it changes the scores), benchmarked by the step."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("benchmark-step")
    torch.manual_seed(0)
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False, task_type="CAUSAL_LM")
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model), config).save_pretrained(root / "trained" / "adapter")
    results = benchmark_step(
        root / "trained", "adapter", validation, root / "results.json", root / "report.md", str(tiny_model), "held_out", LIMIT
    )
    return root, results


def test_an_adapter_is_scored_on_its_base_and_both_scores_are_reported(adapter_run):
    root, results = adapter_run
    assert BenchmarkResults.read(root / "results.json") == results
    assert {t.name: t.documents for t in results.tasks} == {"held_out_loglikelihood": LIMIT, "held_out_exact_match": LIMIT}
    loglikelihood = results.tasks[0]
    assert loglikelihood.base != loglikelihood.tuned  # the adapter was applied
    report = (root / "report.md").read_text()
    for t in results.tasks:
        assert f"| {t.name} | {t.metric} " in report and f"| {t.base:.4g} | {t.tuned:.4g} | {t.delta + 0.0:+.4g} |" in report


def test_scores_equal_lm_evals_own_cli_on_the_same_model_and_tasks(adapter_run, tiny_model, validation, tmp_path):
    root, results = adapter_run
    tasks = write_held_out_tasks(validation, tmp_path / "tasks")  # the step's tasks, rebuilt from the same chats
    args = [
        *("run", "--model", "hf", "--model_args", f"pretrained={tiny_model},peft={root / 'trained' / 'adapter'},dtype=float32"),
        *("--tasks", "held_out_loglikelihood,held_out_exact_match", "--include_path", str(tasks), "--apply_chat_template"),
        *("--limit", str(LIMIT), "--device", "cpu", "--batch_size", "4", "--output_path", str(tmp_path / "out")),
    ]
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    lm_eval = Path(sys.executable).with_name("lm_eval")
    done = subprocess.run([str(lm_eval), *args], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    (written,) = (tmp_path / "out").rglob("results_*.json")
    theirs = json.loads(written.read_text())["results"]
    for t in results.tasks:
        (key,) = (k for k in theirs[t.name] if k.split(",")[0] == t.metric)  # "<metric>,<filter>"
        assert theirs[t.name][key] == pytest.approx(t.tuned, rel=1e-6, abs=1e-9), t.name


def test_documents_the_last_assistant_turn_is_the_answer_and_earlier_turns_lead_the_prompt(tmp_path):
    chats = [
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
                      {"role": "assistant", "content": "4"}, {"role": "user", "content": "and 3+3?"},
                      {"role": "assistant", "content": "6"}]},
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
        {"messages": [{"role": "user", "content": "no answer"}]},
    ]  # fmt: skip
    (tmp_path / "messages.jsonl").write_text("".join(json.dumps(c) + "\n" for c in chats))
    assert documents(tmp_path) == [
        {"system": "Be brief.", "prompt": "user: 2+2?\nassistant: 4\nand 3+3?", "answer": "6"},
        {"system": "", "prompt": "hi", "answer": "hello"},
    ]


def score(name: str, higher: bool, base: float, tuned: float) -> TaskScore:
    return TaskScore(name=name, metric="m", higher_is_better=higher, base=base, tuned=tuned, documents=1)


def test_delta_is_in_the_better_direction_and_forgetting_is_the_largest_drop():
    results = BenchmarkResults(
        ran=True, tasks=[score("ppl", False, 3.0, 2.5), score("em", True, 0.5, 0.2), score("acc", True, 0.1, 0.15)]
    )
    assert [t.delta for t in results.tasks] == pytest.approx([0.5, -0.3, 0.05])
    assert results.delta == pytest.approx(0.25 / 3) and results.forgetting == pytest.approx(0.3)
    improved = BenchmarkResults(ran=True, tasks=[score("ppl", False, 3.0, 2.0)])
    assert improved.forgetting == 0.0 and improved.metrics() == {
        "ppl_base": 3.0, "ppl_tuned": 2.0, "ppl_delta": 1.0, "benchmark_delta": 1.0, "forgetting": 0.0,
    }  # fmt: skip


def test_lm_evals_chatter_is_held_back_and_shown_when_it_fails(capsys):
    from kubetune.benchmark.harness import quiet

    with quiet():
        print("Running loglikelihood requests: 100%", file=sys.stderr)
    assert capsys.readouterr().err == ""
    with pytest.raises(RuntimeError), quiet():
        print("the reason it failed", file=sys.stderr)
        raise RuntimeError("lm-eval failed")
    assert "the reason it failed" in capsys.readouterr().err
