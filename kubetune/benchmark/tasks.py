"""The offline ``held_out`` tasks: lm-eval task YAMLs and their data, built from the prepared validation chats.

Each held-out chat becomes one document: its last assistant turn is the reference ``answer``; a leading system
message is the ``system`` turn (lm-eval's ``description``, a system message under the chat template); the turns
before the last user message are written into the user turn as ``role: content`` lines above it (lm-eval puts a
document in a single user turn). Two tasks read the same JSONL:

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


def documents(validation_data: str | Path) -> list[dict[str, str]]:
    """One document (``system``, ``prompt``, ``answer``) per held-out chat that ends with an assistant turn."""
    path = Path(validation_data)
    path = path / MESSAGES_FILE if path.is_dir() else path
    if not path.is_file():
        raise KubetuneError([Problem(str(path), "not found: the held_out tasks need the validation chats")], "cannot benchmark")
    docs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        messages = json.loads(line).get("messages") if line.strip() else None
        if not messages or messages[-1].get("role") != "assistant" or len(messages) < 2:
            continue
        system = messages[0]["content"] if messages[0]["role"] == "system" else ""
        turns = messages[1 if system else 0 : -1]
        earlier = "".join(f"{m['role']}: {m['content']}\n" for m in turns[:-1])
        docs.append({"system": system, "prompt": earlier + turns[-1]["content"], "answer": messages[-1]["content"]})
    if not docs:
        raise KubetuneError([Problem(str(path), "holds no chat that ends with an assistant turn")], "cannot benchmark")
    return docs


def write_held_out_tasks(validation_data: str | Path, folder: str | Path) -> Path:
    """Write the held-out JSONL, the two task YAMLs and their metric function into ``folder`` (lm-eval's include_path)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    docs = documents(validation_data)
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
