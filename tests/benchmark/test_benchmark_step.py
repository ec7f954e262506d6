"""The held-out documents, how lm-eval's rows are scored (tasks, groups, tags), delta and forgetting, lm-eval's chatter
held back (the component's run and its comparison with lm-eval's CLI: components/benchmark/tests)."""

import json
import sys

import pytest

from kubetune.benchmark.results import BenchmarkResults, TaskScore
from kubetune.benchmark.tasks import documents, write_held_out_tasks
from kubetune.embedded.sample_data import SAMPLE_DATA
from kubetune.errors import KubetuneError


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


def test_documents_leave_out_chats_with_no_user_turn_or_an_empty_answer_and_never_show_an_assistant_as_the_user(tmp_path):
    tool_call = {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {"name": "w"}}]}
    chats = [
        {"messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "hello"}]},
        {"messages": [{"role": "user", "content": "weather?"}, tool_call]},
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "A"},
                      {"role": "assistant", "content": "B"}]},
    ]  # fmt: skip
    (tmp_path / "messages.jsonl").write_text("".join(json.dumps(c) + "\n" for c in chats))
    skipped: list[str] = []
    assert documents(tmp_path, skipped) == [{"system": "", "prompt": "user: q\nassistant: A", "answer": "B"}]
    assert skipped == ["line 1: no user turn before the answer", "line 2: its answer is empty (e.g. only a tool call)"]
    (tmp_path / "messages.jsonl").write_text("".join(json.dumps(c) + "\n" for c in chats[:2]))
    with pytest.raises(KubetuneError) as e:  # nothing usable: one line, exit 2, not lm-eval's ZeroDivisionError
        write_held_out_tasks(tmp_path, tmp_path / "tasks")
    assert "holds no chat that ends with a non-empty assistant turn after a user turn (2 left out: line 1:" in e.value.report()


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


def test_a_group_is_scored_by_its_aggregate_or_its_tasks_and_a_tag_by_its_tasks(tiny_model, tmp_path):
    from kubetune.benchmark.harness import ModelUnderTest, Settings, evaluate

    folder = write_held_out_tasks(SAMPLE_DATA, tmp_path / "tasks")  # the held-out tasks, from the bundled chats
    exact_match = (folder / "held_out_exact_match.yaml").read_text()
    (folder / "tagged.yaml").write_text(exact_match.replace('"held_out_exact_match"', '"kt_tagged"') + 'tag: ["kt_tag"]\n')
    (folder / "group.yaml").write_text("group: kt_group\ntask: [held_out_loglikelihood]\n")  # no aggregate: its task
    aggregate = "aggregate_metric_list: [{metric: exact_match, aggregation: mean, weight_by_size: true}]\n"
    (folder / "group_agg.yaml").write_text("group: kt_group_agg\ntask: [held_out_exact_match]\n" + aggregate)
    how = Settings(tasks=[], include_path=folder, limit=2, device="cpu", batch_size=4, offline=True)
    scores = evaluate(ModelUnderTest("base", str(tiny_model)), ["kt_group", "kt_group_agg", "kt_tag"], how)
    assert sorted(scores) == ["held_out_loglikelihood", "kt_group_agg", "kt_tagged"]
    assert scores["kt_group_agg"].metric == "exact_match" and scores["kt_group_agg"].documents == 2
    assert scores["held_out_loglikelihood"].metric == "bits_per_byte" and not scores["held_out_loglikelihood"].higher_is_better


def test_a_model_without_a_chat_template_is_refused_before_lm_eval_runs(tiny_model, tmp_path, capsys):
    import shutil

    from transformers import AutoTokenizer

    from kubetune.steps.benchmark import benchmark_step
    from tests.support.exits import one_line_exit_2

    plain = tmp_path / "trained" / "final"
    shutil.copytree(tiny_model, plain)
    (plain / "chat_template.jinja").unlink()
    tokenizer = AutoTokenizer.from_pretrained(plain)
    assert tokenizer.chat_template is None  # without it lm-eval fails deep inside (a ValueError: an internal error)
    out = [tmp_path / "results.json", tmp_path / "report.md"]
    err = one_line_exit_2(
        lambda: benchmark_step(tmp_path / "trained", "final", SAMPLE_DATA, *out, str(tiny_model), "held_out", 2), capsys
    )
    hint = "(benchmark a chat model, or set chat_template in its tokenizer_config.json)"
    assert err.splitlines() == [
        "cannot benchmark: 1 problem(s)",
        f"  - checkpoint: its tokenizer has no chat template, which the benchmark applies {hint}",
    ]
    assert not any(p.exists() for p in out)
