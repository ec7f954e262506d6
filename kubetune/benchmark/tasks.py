"""The offline ``held_out`` tasks: lm-eval task YAMLs and their data, built from the prepared validation chats.

Each held-out chat becomes one document: its last assistant turn is the reference ``answer``; a leading system
message is the ``system`` turn (lm-eval's ``description``, a system message under the chat template); the turns
before the last user message are written into the user turn as ``role: content`` lines above it (lm-eval puts a
document in a single user turn). A chat with no user turn before its answer, or an empty answer (a tool call), is
left out and counted in the report. Two tasks read the same JSONL:

- ``held_out_loglikelihood``: bits per byte of the reference answer given the prompt (lower is better), and lm-eval's
  ``acc`` (the answer is the greedy continuation);
- ``held_out_exact_match``: greedy generation up to a blank line or the end of sequence, with enough new tokens for
  the longest answer (its UTF-8 bytes, at most 256); ``exact_match`` against the answer, surrounding whitespace removed.

Named lm-eval tasks are checked here too: an unknown name is refused with a did-you-mean from lm-eval's index.
"""

from __future__ import annotations

import difflib
import json
import shutil
from pathlib import Path

from kubetune.data import MESSAGES_FILE
from kubetune.errors import KubetuneError, Problem

HELD_OUT = "held_out"
LOGLIKELIHOOD_TASK = "held_out_loglikelihood"
EXACT_MATCH_TASK = "held_out_exact_match"
MAX_GEN_TOKS = 256
FIELD = "benchmark_tasks"


def parse_tasks(benchmark_tasks: str) -> list[str]:
    """The task names of ``benchmark_tasks`` (comma-separated, blanks ignored), each once, in order."""
    names = [name.strip() for name in benchmark_tasks.split(",")]
    return list(dict.fromkeys(name for name in names if name))


def name_problems(names: list[str], known: list[str]) -> list[Problem]:
    """Names that are neither ``held_out`` nor in ``known`` (lm-eval's task, group and tag names), each with a did-you-mean."""
    index = set(known)
    problems = []
    for name in names:
        if name != HELD_OUT and name not in index:
            close = difflib.get_close_matches(name, [HELD_OUT, *known], n=1)
            hint = f"did you mean {close[0]!r}?" if close else "give held_out or lm-eval task names (lm_eval ls tasks)"
            problems.append(Problem(FIELD, f"unknown lm-eval task {name!r}", hint))
    return problems


def limit_problems(limit: int) -> list[Problem]:
    return [Problem("benchmark_limit", f"must be 0 (every document) or more, got {limit}")] if limit < 0 else []


def documents(validation_data: str | Path, skipped: list[str] | None = None) -> list[dict[str, str]]:
    """One document (``system``, ``prompt``, ``answer``) per held-out chat that ends with a non-empty assistant turn
    after a user turn; the others are left out, each noted in ``skipped`` (when given) as ``line <n>: <why>``.

    The prompt is the last turn (a user's) as it is, after the earlier turns as ``role: content`` lines; when the turn
    before the answer is not a user's (an assistant's, a tool's), every turn before the answer is such a line, so
    no other role's words read as the user's."""
    path = Path(validation_data)
    path = path / MESSAGES_FILE if path.is_dir() else path
    if not path.is_file():
        raise KubetuneError([Problem(str(path), "not found: the held_out tasks need the validation chats")], "cannot benchmark")
    left_out = [] if skipped is None else skipped
    docs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        messages = json.loads(line).get("messages") if line.strip() else None
        if not messages or messages[-1].get("role") != "assistant":
            continue  # nothing to score: not a chat that ends with an answer
        if why := _unusable(messages):
            left_out.append(f"line {number}: {why}")
            continue
        system = messages[0]["content"] if messages[0]["role"] == "system" else ""
        docs.append({"system": system, "prompt": _prompt(messages[1 if system else 0 : -1]), "answer": messages[-1]["content"]})
    if not docs:
        why = f" ({len(left_out)} left out: {'; '.join(left_out[:3])})" if left_out else ""
        raise KubetuneError(
            [Problem(str(path), f"holds no chat that ends with a non-empty assistant turn after a user turn{why}")],
            "cannot benchmark",
        )
    return docs


def _prompt(turns: list[dict]) -> str:
    """The turns before the answer as one user turn: the last one bare when it is a user's, the others as lines."""
    lines = [f"{m['role']}: {m.get('content') or ''}" for m in turns]
    if turns[-1]["role"] == "user":
        lines[-1] = turns[-1]["content"]
    return "\n".join(lines)


def _unusable(messages: list[dict]) -> str | None:
    """Why a chat ending with an assistant turn cannot be a document: no user turn before it, or an empty answer."""
    if not any(m.get("role") == "user" for m in messages[:-1]):
        return "no user turn before the answer"
    if not (messages[-1].get("content") or "").strip():
        return "its answer is empty (e.g. only a tool call)"
    return None


def write_held_out_tasks(validation_data: str | Path, folder: str | Path, skipped: list[str] | None = None) -> Path:
    """Write the held-out JSONL, the two task YAMLs and their metric function into ``folder`` (lm-eval's include_path);
    the chats left out are noted in ``skipped`` (``documents``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    docs = documents(validation_data, skipped)
    data = folder / "held_out.jsonl"
    data.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    shutil.copyfile(Path(__file__).with_name("held_out_metric.py"), folder / "held_out_metric.py")
    common = {
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data)}, "cache_dir": str(folder / "cache")},
        "test_split": "test",
        "description": "{{system}}",
        "doc_to_text": "{{prompt}}",
        "doc_to_target": "{{answer}}",
        "target_delimiter": "",
        "num_fewshot": 0,
        "metadata": {"version": 1},
    }
    loglikelihood = common | {
        "task": LOGLIKELIHOOD_TASK,
        "output_type": "loglikelihood",
        "process_results": "!function held_out_metric.process_results",
        "metric_list": [
            {"metric": "bits_per_byte", "aggregation": "bits_per_byte", "higher_is_better": False},
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
        ],
    }
    longest = max(len(d["answer"].encode("utf-8")) for d in docs)
    exact_match = common | {
        "task": EXACT_MATCH_TASK,
        "output_type": "generate_until",
        "generation_kwargs": {"until": ["\n\n"], "do_sample": False, "max_gen_toks": min(MAX_GEN_TOKS, longest + 1)},
        "filter_list": [{"name": "strip", "filter": [{"function": "remove_whitespace"}, {"function": "take_first"}]}],
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}],
    }
    for task in (loglikelihood, exact_match):
        (folder / f"{task['task']}.yaml").write_text(_yaml(task), encoding="utf-8")
    return folder


def _yaml(task: dict) -> str:
    """The task as YAML; JSON is YAML, and ``!function`` must stay an unquoted tag."""
    lines = []
    for key, value in task.items():
        text = value if isinstance(value, str) and value.startswith("!function ") else json.dumps(value)
        lines.append(f"{key}: {text}")
    return "\n".join(lines) + "\n"
