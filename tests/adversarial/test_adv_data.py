"""Adversarial data preparation: hostile files, broken models, foreign or failing output directories, kills.

Every case goes through ``kubetune prepare`` and asserts what a user sees: the exit code, the one line that
names the file (and line or row) and the reason, and what is on disk afterwards (nothing half-written, the
user's own files untouched).
"""

from __future__ import annotations

import errno
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kubetune.cli import app
from kubetune.data import sources
from kubetune.data.tokenize import IGNORE_INDEX
from kubetune.files import umask
from kubetune.steps import prepare as core

GOOD = {"messages": [{"role": "user", "content": "What is 2 plus 2?"}, {"role": "assistant", "content": "2 plus 2 is 4."}]}
CALL = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
TOOL_CHAT = {
    "messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "c1", "name": "get_weather", "content": "sunny"},
        {"role": "assistant", "content": "It is sunny."},
    ]
}
# ChatML that renders OpenAI-style tool calls (the tiny model's own template does not)
TOOL_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{%- if message.get('tool_calls') -%}"
    "{%- if message['content'] %}{{ message['content'] + '\n' }}{% endif -%}"
    "{%- for call in message['tool_calls'] -%}"
    "{%- set args = call['function']['arguments'] -%}"
    "{{ '<tool_call>' + call['function']['name'] + ' ' + (args if args is string else args | tojson) + '</tool_call>' }}"
    "{%- endfor -%}"
    "{%- else -%}{{ message['content'] }}{%- endif -%}"
    "{{ '<|im_end|>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}"
)
SMALL = 16 * 2**10  # the record size limit in cases that lower it (the real one is tested by memory)


@pytest.fixture(scope="session")
def tool_model(tiny_model, tmp_path_factory):
    model = tmp_path_factory.mktemp("models") / "tool-llama"
    shutil.copytree(tiny_model, model)
    (model / "chat_template.jinja").write_text(TOOL_TEMPLATE)
    return model


def lines(path: Path, records: list, opener: Callable = open) -> Path:
    with opener(path, "wb") as f:
        for record in records:
            f.write(record if isinstance(record, bytes) else json.dumps(record).encode())
            f.write(b"\n")
    return path


def parquet(path: Path, records: list[dict]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(records), path)
    return path


def tree(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` (hidden ones too) and its bytes."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def invoke(*args: str):
    result = CliRunner().invoke(app, ["prepare", *map(str, args)])
    assert "Traceback" not in result.output, result.output
    return result


def assert_one_problem(result, line: str) -> None:
    assert result.exit_code == 2, result.output
    problems = [x for x in result.stderr.splitlines() if x.startswith("  - ")]
    assert problems == [f"  - {line}"], result.stderr


def with_tool_call(**changes) -> dict:
    return {"messages": [TOOL_CHAT["messages"][0], {**TOOL_CHAT["messages"][1], **changes}, *TOOL_CHAT["messages"][2:]]}


def call_with(**function) -> dict:
    return with_tool_call(tool_calls=[{"id": "c1", "type": "function", "function": function}])


# ---------------------------------------------------------------- bad inputs: one line, nothing written

# Each case builds its input under ``d`` and returns (data, the expected problem line), or (data, line, model).
Case = Callable[[Path, Path, Path], tuple]


def _truncated_gzip(d, model, tools):
    packed = gzip.compress(b"".join(json.dumps(GOOD).encode() + b"\n" for _ in range(200)))
    (d / "t.jsonl.gz").write_bytes(packed[: len(packed) // 2])
    return d / "t.jsonl.gz", f"{d}/t.jsonl.gz:1: truncated gzip file: the compressed data ends unfinished"


def _not_gzip(d, model, tools):
    lines(d / "plain.jsonl.gz", [GOOD])
    return d / "plain.jsonl.gz", f"{d}/plain.jsonl.gz: is not a gzip file (rename it without .gz if it is plain JSON Lines)"


def _corrupt_parquet(d, model, tools):
    data = parquet(d / "c.parquet", [GOOD] * 3).read_bytes()
    (d / "c.parquet").write_bytes(data[: len(data) // 2])
    message = "Parquet magic bytes not found in footer. Either the file is corrupted or this is not a parquet file."
    return d / "c.parquet", f"{d}/c.parquet: is not a readable Parquet file: {message}"


def _jsonl_named_parquet(d, model, tools):
    lines(d / "j.parquet", [GOOD] * 3)
    message = "Parquet magic bytes not found in footer. Either the file is corrupted or this is not a parquet file."
    return d / "j.parquet", f"{d}/j.parquet: is not a readable Parquet file: {message}"


def _missing(d, model, tools):
    return d / "nope.jsonl", f"{d}/nope.jsonl: does not exist"


def _dangling_link(d, model, tools):
    (d / "link.jsonl").symlink_to(d / "gone.jsonl")
    return d / "link.jsonl", f"{d}/link.jsonl: does not exist"


def _fifo(d, model, tools):
    os.mkfifo(d / "pipe.jsonl")
    return d / "pipe.jsonl", f"{d}/pipe.jsonl: is not a regular file or a directory"


def _empty_directory(d, model, tools):
    (d / "empty").mkdir()
    return d / "empty", f"{d}/empty: holds no data file (.jsonl, .jsonl.gz, .json, .parquet)"


def _directory_of_other_files(d, model, tools):
    (d / "docs").mkdir()
    (d / "docs" / "notes.txt").write_text("hello")
    return d / "docs", f"{d}/docs: holds no data file (.jsonl, .jsonl.gz, .json, .parquet)"


def _no_such_model(d, model, tools):
    return lines(d / "d.jsonl", [GOOD]), "/nope/model: does not exist (give a model directory or a hub id)", "/nope/model"


def _model_without_tokenizer(d, model, tools):
    (d / "weights").mkdir()
    (d / "weights" / "config.json").write_text("{}")
    problem = f"{d}/weights: has no tokenizer (tokenizer.json, tokenizer_config.json)"
    return lines(d / "d.jsonl", [GOOD]), problem, d / "weights"


def _template_that_does_not_compile(d, model, tools):
    shutil.copytree(model, d / "m")
    (d / "m" / "chat_template.jinja").write_text("{% for m in messages %}")
    problem = f"{d}/m: its tokenizer cannot be used: Unexpected end of template. Jinja was looking for the following tags: 'endfor' or 'else'. The innermost block that needs to be closed is 'for'."  # noqa: E501
    return lines(d / "d.jsonl", [GOOD]), problem, d / "m"


def _jsonl_not_utf8(d, model, tools):
    data = lines(d / "d.jsonl", [GOOD, b'{"messages": [{"role": "user", "content": "caf\xe9"}]}'])
    return data, f"{data}:2: invalid JSON: not UTF-8 (byte 0xe9 at byte 47 of the line)"


def _gzip_not_utf8(d, model, tools):
    data = lines(d / "d.jsonl.gz", [GOOD, GOOD, b'{"messages": "\xff"}'], gzip.open)
    return data, f"{data}:3: invalid JSON: not UTF-8 (byte 0xff at byte 15 of the line)"


def _json_array_not_utf8(d, model, tools):
    bad = b'{"messages": [{"role": "user",\n "content": "caf\xe9"}]}'
    (d / "a.json").write_bytes(b"[\n" + json.dumps(GOOD).encode() + b",\n" + bad + b"\n]\n")
    return d / "a.json", f"{d}/a.json:4: invalid JSON: not UTF-8 (byte 0xe9)"


def _parquet_not_utf8(d, model, tools):
    import pyarrow as pa
    import pyarrow.parquet as pq

    content = pa.array([b"fine", b"caf\xe9"], pa.binary()).view(pa.string())  # a string column holding bad bytes
    pq.write_table(pa.table({"instruction": content, "output": ["a", "b"]}), d / "p.parquet")
    return d / "p.parquet", f"{d}/p.parquet:row 2: not UTF-8: a string holds byte 0xe9"


def _line_over_limit(d, model, tools):
    huge = {"messages": [{"role": "user", "content": "x" * SMALL}, {"role": "assistant", "content": "y"}]}
    data = lines(d / "d.jsonl", [GOOD, GOOD, huge, GOOD])
    return data, f"{data}:3: the line is larger than 16 KiB, the limit for one record"


def _array_element_over_limit(d, model, tools):
    huge = {"messages": [{"role": "user", "content": "x" * SMALL}, {"role": "assistant", "content": "y"}]}
    (d / "a.json").write_text("[\n" + json.dumps(GOOD) + ",\n" + json.dumps(huge) + "\n]")
    return d / "a.json", f"{d}/a.json:3: the array element is larger than 16 KiB, the limit for one record"


def _parquet_row_over_limit(d, model, tools):
    huge = {"messages": [{"role": "user", "content": "x" * SMALL}, {"role": "assistant", "content": "y"}]}
    data = parquet(d / "p.parquet", [GOOD, huge, GOOD])
    return data, f"{data}:row 2: the row is larger than 16 KiB, the limit for one record"


def _json_array_over_limit(d, model, tools):
    (d / "a.json").write_text("[\n" + ",\n".join([json.dumps(GOOD)] * 4000) + "\n]")
    size = (d / "a.json").stat().st_size / 2**10
    hint = "write it as JSON Lines, one record a line: those are read as a stream"
    return d / "a.json", f"{d}/a.json: is a JSON array of {size:g} KiB, over the 256 KiB limit of .json arrays ({hint})"


def _json_array_not_closed(d, model, tools):
    (d / "a.json").write_text("[\n" + json.dumps(GOOD) + ",\n" + json.dumps(GOOD) + "\n")
    return d / "a.json", f"{d}/a.json:4: invalid JSON: the array is not closed with `]`"


def _tool_calls_not_a_list(d, model, tools):
    data = lines(d / "d.jsonl", [with_tool_call(tool_calls="not-a-list", content="calling")])
    return data, f"{data}:1: messages[1].tool_calls must be a non-empty list, got a string", tools


def _tool_call_without_function(d, model, tools):
    data = lines(d / "d.jsonl", [GOOD, with_tool_call(tool_calls=[{"id": "c1", "name": "get_weather"}])])
    line = f"{data}:2: messages[1].tool_calls[0].function must be an object with `name` and `arguments`, got null"
    return data, line, tools


def _tool_call_without_name(d, model, tools):
    data = lines(d / "d.jsonl", [call_with(arguments="{}")])
    return data, f"{data}:1: messages[1].tool_calls[0].function.name must be a non-empty string, got null", tools


def _arguments_a_list(d, model, tools):
    data = lines(d / "d.jsonl", [call_with(name="get_weather", arguments=["Paris"])])
    line = f"{data}:1: messages[1].tool_calls[0].function.arguments must be a JSON object or a string holding one, got list"
    return data, line, tools


def _arguments_not_json(d, model, tools):
    data = lines(d / "d.jsonl", [call_with(name="get_weather", arguments="city=Paris")])
    line = f"{data}:1: messages[1].tool_calls[0].function.arguments must be a string holding a JSON object, got a string that is not JSON"  # noqa: E501
    return data, line, tools


def _tool_calls_on_a_user_turn(d, model, tools):
    record = {"messages": [{"role": "user", "content": "hi", "tool_calls": [CALL]}, {"role": "assistant", "content": "a"}]}
    data = lines(d / "d.jsonl", [record])
    return data, f"{data}:1: messages[0].tool_calls is only allowed in assistant turns, not user", tools


def _tool_answer_to_no_call(d, model, tools):
    record = TOOL_CHAT | {"messages": [*TOOL_CHAT["messages"][:2], {**TOOL_CHAT["messages"][2], "tool_call_id": "c9"}]}
    data = lines(d / "d.jsonl", [record])
    return data, f"{data}:1: messages[2].tool_call_id 'c9' answers no earlier tool call", tools


def _tool_call_with_a_template_without_tools(d, model, tools):
    data = lines(d / "d.jsonl", [GOOD, TOOL_CHAT])
    return data, f"{data}:2: messages[1] calls a tool, and the model's chat template does not render tool calls", model


CASES: dict[str, Case] = {
    "truncated .gz": _truncated_gzip,
    ".gz that is not gzip": _not_gzip,
    "corrupt .parquet": _corrupt_parquet,
    "JSON Lines named .parquet": _jsonl_named_parquet,
    "missing file": _missing,
    "dangling symlink": _dangling_link,
    "a FIFO": _fifo,
    "empty directory": _empty_directory,
    "directory without data files": _directory_of_other_files,
    "--model that does not exist": _no_such_model,
    "--model without a tokenizer": _model_without_tokenizer,
    "chat template that does not compile": _template_that_does_not_compile,
    "JSONL not UTF-8": _jsonl_not_utf8,
    ".jsonl.gz not UTF-8": _gzip_not_utf8,
    "JSON array not UTF-8": _json_array_not_utf8,
    "Parquet string not UTF-8": _parquet_not_utf8,
    "line over the record limit": _line_over_limit,
    "array element over the record limit": _array_element_over_limit,
    "Parquet row over the record limit": _parquet_row_over_limit,
    ".json array over its file limit": _json_array_over_limit,
    "JSON array not closed": _json_array_not_closed,
    "tool_calls not a list": _tool_calls_not_a_list,
    "tool call without function": _tool_call_without_function,
    "tool call without a name": _tool_call_without_name,
    "arguments a list": _arguments_a_list,
    "arguments not JSON": _arguments_not_json,
    "tool_calls on a user turn": _tool_calls_on_a_user_turn,
    "tool answer to no call": _tool_answer_to_no_call,
    "tool call, template without tools": _tool_call_with_a_template_without_tools,
}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_naming_the_place_and_nothing_is_written(tmp_path, tiny_model, tool_model, monkeypatch, case):
    monkeypatch.setattr(sources, "MAX_RECORD_BYTES", SMALL)
    monkeypatch.setattr(sources, "MAX_JSON_ARRAY_BYTES", 256 * 2**10)
    (tmp_path / "in").mkdir()
    data, line, *model = CASES[case](tmp_path / "in", tiny_model, tool_model)
    before = tree(tmp_path / "in")
    result = invoke(data, "--model", model[0] if model else tiny_model, "-o", tmp_path / "out")
    assert_one_problem(result, line)
    assert sorted(os.listdir(tmp_path)) == ["in"]  # no output, no staging left
    assert tree(tmp_path / "in") == before


# ---------------------------------------------------------------- outputs: never delete what kubetune did not write


def _user_file_in_train(out: Path, model: Path) -> str:
    (out / "train").mkdir(parents=True)
    (out / "train" / "mine.txt").write_text("keep me")
    return f"{out}: holds files but no `.kubetune-prepared` marker, so kubetune prepare did not write them"


def _user_file_beside_an_output(out: Path, model: Path) -> str:
    _prepare_into(out, model)
    (out / "notes.md").write_text("my notes")
    return f"{out}: holds `notes.md`, not written by kubetune prepare"


def _user_file_inside_a_prepared_train(out: Path, model: Path) -> str:
    _prepare_into(out, model)
    (out / "train" / "extra.jsonl").write_text("{}\n")
    return f"{out}: holds `train`, which holds `extra.jsonl`, not written by kubetune prepare"


def _user_report(out: Path, model: Path) -> str:
    _prepare_into(out, model)
    (out / "report.json").write_text('{"mine": true}')
    return f"{out}: holds `report.json`, which is a file kubetune prepare did not write"


def _a_file(out: Path, model: Path) -> str:
    out.write_text("not a directory")
    return f"{out}: is not a directory"


def _prepare_into(out: Path, model: Path) -> None:
    data = lines(out.parent / "seed.jsonl", [GOOD] * 4)
    assert invoke(data, "--model", model, "-o", out).exit_code == 0
    data.unlink()


FOREIGN = {
    "user file in DIR/train": _user_file_in_train,
    "user file beside a prepared output": _user_file_beside_an_output,
    "user file inside a prepared train/": _user_file_inside_a_prepared_train,
    "user's own report.json": _user_report,
    "-o is a file": _a_file,
}
HINT = " (use a new or empty directory, or --overwrite to replace it)"


@pytest.mark.parametrize("case", FOREIGN)
def test_output_holding_foreign_data_is_refused_untouched_and_overwrite_replaces_it(tmp_path, tiny_model, case):
    out = tmp_path / "out"
    line = FOREIGN[case](out, tiny_model) + HINT
    before = tree(tmp_path)
    data = lines(tmp_path / "d.jsonl", [GOOD] * 4)
    result = invoke(data, "--model", tiny_model, "-o", out)
    assert_one_problem(result, line)
    data.unlink()
    assert tree(tmp_path) == before and not [p for p in os.listdir(tmp_path) if p.startswith(".")]
    lines(tmp_path / "d.jsonl", [GOOD] * 4)
    assert invoke(data, "--model", tiny_model, "-o", out, "--overwrite").exit_code == 0
    assert sorted(os.listdir(out)) == [".kubetune-prepared", "report.json", "summary.md", "train", "validation"]


@pytest.mark.parametrize("place", ["data", "cwd"])
def test_output_that_holds_the_data_or_the_working_directory_is_refused_even_with_overwrite(
    tmp_path, tiny_model, monkeypatch, place
):
    (tmp_path / "in" / "work").mkdir(parents=True)
    data = lines(tmp_path / "in" / "d.jsonl", [GOOD] * 4)
    monkeypatch.chdir(tmp_path / "in" / "work")
    before = tree(tmp_path)
    out = tmp_path / "in" / "work" if place == "cwd" else tmp_path
    held = f"the working directory ({out})" if place == "cwd" else f"the data ({data})"
    result = invoke(data, "--model", tiny_model, "-o", out, "--overwrite")
    assert_one_problem(result, f"{out}: holds {held} (write the prepared data to a directory of its own)")
    assert tree(tmp_path) == before


def test_the_home_directory_and_system_folders_are_never_an_output_even_with_overwrite(tmp_path, tiny_model, monkeypatch):
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id").write_text("key")
    data = lines(tmp_path / "d.jsonl", [GOOD] * 4)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    before = tree(tmp_path)
    result = invoke(data, "--model", tiny_model, "-o", home, "--overwrite")
    assert_one_problem(result, f"{home}: holds the home directory ({home}) (write the prepared data to a directory of its own)")
    result = invoke(data, "--model", tiny_model, "-o", "/usr", "--overwrite")
    assert_one_problem(result, "/usr: is the system folder /usr (write the prepared data to a directory of its own inside it)")
    assert tree(tmp_path) == before


def test_a_previous_output_is_replaced_whole_with_the_umask_modes(tmp_path, tiny_model):
    data = lines(tmp_path / "d.jsonl", [GOOD] * 4 + [{**GOOD, "unmask": True}] * 4)
    out = tmp_path / "out"
    assert invoke(data, "--model", tiny_model, "-o", out, "--seed", "1").exit_code == 0
    assert invoke(data, "--model", tiny_model, "-o", out, "--seed", "2", "--validation-ratio", "0.5").exit_code == 0
    assert json.loads((out / "report.json").read_text())["summary"]["validation_samples"] == 4
    modes = {str(p.relative_to(out)): p.stat().st_mode & 0o777 for p in [out, *out.rglob("*")]}
    assert modes == {name: (0o777 if (out / name).is_dir() else 0o666) & ~umask() for name in modes}  # 755/644 under 022
    assert sorted(os.listdir(tmp_path)) == ["d.jsonl", "out"]


def test_the_python_api_and_component_refuse_a_foreign_dataset_directory(tmp_path, tiny_model):
    from kubetune.errors import KubetuneError

    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "data.jsonl").write_text("my own data\n")
    data = lines(tmp_path / "d.jsonl", [GOOD] * 4)
    with pytest.raises(KubetuneError) as info:
        core.prepare(str(data), str(tiny_model), tmp_path / "train", tmp_path / "val", num_proc=1)
    assert [str(p) for p in info.value.problems] == [
        f"{tmp_path}/train: holds files but no `.kubetune-prepared` marker, so kubetune prepare did not write them" + HINT
    ]
    assert (tmp_path / "train" / "data.jsonl").read_text() == "my own data\n" and not (tmp_path / "val").exists()


# ---------------------------------------------------------------- failing disks and workers


@pytest.fixture
def tmpfs(tmp_path):
    """Mount a tiny tmpfs (root only; skipped elsewhere: test_full_disk_injected covers ENOSPC everywhere)."""
    mounts = []

    def mount(name: str, options: str) -> Path:
        path = tmp_path / name
        path.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
        if done.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
        mounts.append(path)
        return path

    yield mount
    for path in mounts:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(path)], check=True)
            raise AssertionError(f"{path} was still busy: prepare left a file open on it")


@pytest.mark.parametrize(
    ("options", "reason"),
    [("size=64k", "No space left on device (ENOSPC)"), ("ro,size=64k", "Read-only file system (EROFS)")],
    ids=["full disk", "read-only disk"],
)
def test_full_or_read_only_output_disk(tmp_path, tiny_model, tmpfs, options, reason):
    disk = tmpfs("disk", options)
    result = invoke("kubetune://sample-chat", "--model", tiny_model, "-o", disk / "out")
    assert_one_problem(result, f"{disk}/out: cannot write the prepared data: {reason}")
    assert os.listdir(disk) == []


def test_full_disk_injected_at_the_write(tmp_path, tiny_model, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(core, "_publish", full)
    result = invoke(lines(tmp_path / "d.jsonl", [GOOD] * 4), "--model", tiny_model, "-o", tmp_path / "out")
    assert_one_problem(result, f"{tmp_path}/out: cannot write the prepared data: No space left on device (ENOSPC)")
    assert sorted(os.listdir(tmp_path)) == ["d.jsonl"]


def test_unwritable_output_path(tmp_path, tiny_model):
    (tmp_path / "file").write_text("x")
    for out in (tmp_path / "file" / "out", tmp_path / "file" / "sub" / "out"):
        result = invoke(lines(tmp_path / "d.jsonl", [GOOD]), "--model", tiny_model, "-o", out)
        assert_one_problem(result, f"{out}: cannot be created: {tmp_path}/file is not a directory")
    assert sorted(os.listdir(tmp_path)) == ["d.jsonl", "file"]


def test_a_worker_that_dies_is_one_line(tmp_path, tiny_model, monkeypatch):
    parent, normalize = os.getpid(), core.normalize

    def die_in_worker(*args):
        if os.getpid() != parent:
            os._exit(9)
        return normalize(*args)

    monkeypatch.setattr(core, "normalize", die_in_worker)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})  # two workers, even on one core
    result = invoke(lines(tmp_path / "d.jsonl", [GOOD] * 4), "--model", tiny_model, "-o", tmp_path / "out")
    hint = "run again; with less memory, pass fewer workers"
    assert_one_problem(result, f"worker: a data preparation worker process died (killed, or out of memory?) ({hint})")
    assert sorted(os.listdir(tmp_path)) == ["d.jsonl"]


# ---------------------------------------------------------------- kills: the previous output or the new one, whole

KILLER = """
import os, signal, sys
point, out, sig = sys.argv[1], os.path.abspath(sys.argv[2]), getattr(signal, sys.argv[3])
rename, replace = os.rename, os.replace

def killing_rename(src, dst, *args, **kwargs):
    if point == "before the swap" and os.path.abspath(src) == out:
        os.kill(os.getpid(), sig)
    rename(src, dst, *args, **kwargs)
    if (point == "mid-swap" and os.path.abspath(src) == out) or (point == "after the swap" and os.path.abspath(dst) == out):
        os.kill(os.getpid(), sig)

def killing_replace(src, dst, *args, **kwargs):
    if point == "while writing":
        os.kill(os.getpid(), sig)
    replace(src, dst, *args, **kwargs)

os.rename, os.replace = killing_rename, killing_replace
from kubetune.cli import app
app(sys.argv[4:])
"""


@pytest.mark.parametrize(
    ("point", "sig", "seen"),
    [
        ("while writing", "SIGKILL", "old"),
        ("while writing", "SIGINT", "old"),
        ("before the swap", "SIGKILL", "old"),
        ("mid-swap", "SIGKILL", "none"),
        ("after the swap", "SIGKILL", "new"),
    ],
)
def test_a_killed_prepare_leaves_the_old_output_or_the_new_one_never_half(tmp_path, tiny_model, point, sig, seen):
    data, out = lines(tmp_path / "d.jsonl", [GOOD, {**GOOD, "unmask": True}] * 4), tmp_path / "out"
    assert invoke(data, "--model", tiny_model, "-o", out, "--seed", "1").exit_code == 0
    old = tree(out)
    args = ["prepare", str(data), "--model", str(tiny_model), "-o", str(out), "--seed", "2", "--validation-ratio", "0.5"]
    done = subprocess.run([sys.executable, "-c", KILLER, point, str(out), sig, *args], capture_output=True, text=True)
    assert done.returncode == (-9 if sig == "SIGKILL" else 130), done.stderr
    assert "Traceback" not in done.stderr
    if seen == "none":  # visibly absent; the old output waits beside it, whole, and comes back on the next run
        assert not out.exists() and [tree(p) for p in tmp_path.glob(".out.old-*")] == [old]
    else:
        assert (tree(out) == old) == (seen == "old") and ".kubetune-prepared" in tree(out)
    if sig == "SIGINT":
        assert sorted(os.listdir(tmp_path)) == ["d.jsonl", "out"]  # Ctrl-C cleans its staging itself
    assert invoke(data, "--model", tiny_model, "-o", out).exit_code == 0
    assert sorted(os.listdir(tmp_path)) == ["d.jsonl", "out"]  # stale staging of the killed run is gone


# ---------------------------------------------------------------- tool calls, in every format


def _tool_data(d: Path, fmt: str) -> Path:
    records = [TOOL_CHAT, GOOD]
    if fmt == "jsonl":
        return lines(d / "d.jsonl", records)
    if fmt == "jsonl.gz":
        return lines(d / "d.jsonl.gz", records, gzip.open)
    if fmt == "json":
        (d / "d.json").write_text(json.dumps(records, indent=2))
        return d / "d.json"
    return parquet(d / "d.parquet", records)  # struct columns: every absent field comes back as null


@pytest.mark.parametrize("fmt", ["jsonl", "jsonl.gz", "json", "parquet"])
def test_tool_calls_and_tool_turns_are_prepared_with_a_template_that_renders_them(tmp_path, tool_model, fmt):
    from tokenizers import Tokenizer

    out = tmp_path / "out"
    result = invoke(_tool_data(tmp_path, fmt), "--model", tool_model, "-o", out, "--validation-ratio", "0")
    assert result.exit_code == 0, result.output
    sample = json.loads((out / "train" / "data.jsonl").read_text().splitlines()[0])
    learned = [t for t, label in zip(sample["input_ids"], sample["labels"], strict=True) if label != IGNORE_INDEX]
    decode = Tokenizer.from_file(str(tool_model / "tokenizer.json")).decode
    assert decode(learned, skip_special_tokens=False) == (
        '<tool_call>get_weather {"city": "Paris"}</tool_call><|im_end|>It is sunny.<|im_end|>'
    )
    assert decode(sample["input_ids"], skip_special_tokens=False).count("sunny<|im_end|>") == 1  # the tool's answer: context
    message = json.loads((out / "train" / "messages.jsonl").read_text().splitlines()[0])["messages"][1]
    assert message["content"] == "" and message["tool_calls"][0]["function"] == CALL["function"]


# ---------------------------------------------------------------- memory: bounded by the record limit, not the input

MEASURE = """
import resource, subprocess, sys
done = subprocess.run([sys.executable, "-m", "kubetune.cli", "prepare", *sys.argv[1:]], capture_output=True, text=True)
print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024, done.stderr[-2000:])
"""


def test_a_100_mb_record_is_dropped_without_being_held(tmp_path, tiny_model):
    """Peak memory of ``kubetune prepare`` over a 100 MB one-line record stays within a few record limits of
    the same run without it (it used to take 15.7 GB)."""
    good = (json.dumps(GOOD) + "\n").encode() * 8
    small, big = tmp_path / "small.jsonl", tmp_path / "big.jsonl"
    small.write_bytes(good)
    with big.open("wb") as f:
        f.write(good + b'{"messages": [{"role": "user", "content": "')
        for _ in range(100):
            f.write(b"a" * 2**20)
        f.write(b'"}, {"role": "assistant", "content": "b"}]}\n' + good)
    peaks = {}
    for data in (small, big):
        args = [str(data), "--model", str(tiny_model), "-o", str(tmp_path / data.stem), "--on-invalid", "skip"]
        done = subprocess.run([sys.executable, "-c", MEASURE, *args], capture_output=True, text=True, check=True)
        code, peak, stderr = done.stdout.split(" ", 2)
        assert code == "0", stderr
        peaks[data.stem] = int(peak)
    assert peaks["big"] - peaks["small"] < 3 * sources.MAX_RECORD_BYTES, peaks
    report = json.loads((tmp_path / "big" / "report.json").read_text())
    assert report["dropped"] == [
        {"where": f"{big}:9", "reason": "too_large", "message": "the line is larger than 16 MiB, the limit for one record"}
    ]
    assert report["summary"]["train_samples"] + report["summary"]["validation_samples"] == 16


def test_stale_staging_of_a_dead_run_is_removed_and_a_live_ones_kept(tmp_path, tiny_model):
    """Old expectation changed (round 2): unmarked look-alikes of a dead pid used to be deleted; now only
    directories holding kubetune's staging marker are."""
    out = tmp_path / "out"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    for name in (f".out.prepare-{dead.stdout.strip()}-abcd1234", f".prepare-{dead.stdout.strip()}-xyz_5678"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "data.jsonl").write_text("half")
        (tmp_path / name / core.STAGING_MARKER).write_text("1\n")
    live = f".out.prepare-{os.getpid()}-live0000"  # a run still going (this process): left alone
    (tmp_path / live).mkdir()
    (tmp_path / live / core.STAGING_MARKER).write_text("1\n")
    assert invoke(lines(tmp_path / "d.jsonl", [GOOD] * 4), "--model", tiny_model, "-o", out).exit_code == 0
    assert sorted(os.listdir(tmp_path)) == [live, "d.jsonl", "out"]


def _user_entries(d: Path, dead: str) -> None:
    """What a user may keep beside an output, named like kubetune's leftovers but without its marker."""
    (d / ".prepared.old-backup").mkdir()
    (d / ".prepared.old-backup" / "notes.txt").write_text("notes")
    (d / ".prepared.old-2024.tar").write_text("x")
    (d / ".prepared.old-abcd1234").mkdir()  # the exact shape of a swap's leftover, but not ours
    (d / ".prepared.old-abcd1234" / "mine.txt").write_text("mine")
    (d / ".prepare-2024-plan.md").write_text("plan")
    (d / f".prepare-{dead}-drafts").mkdir()
    (d / f".prepare-{dead}-drafts" / "a.txt").write_text("a")
    (d / f".prepared.prepare-{dead}-abcd1234").write_text("a plain file")  # never a file
    (d / f".prepared.staging-{dead}-abcd1234").mkdir()  # no staging marker inside
    (d / f".prepared.staging-{dead}-abcd1234" / "b.txt").write_text("b")


@pytest.mark.parametrize("existing", [False, True])
def test_users_dot_entries_beside_the_output_are_never_removed_or_restored(tmp_path, tiny_model, monkeypatch, existing):
    """Finding 1: only kubetune's own marked staging and aside directories are cleaned; an absent output is
    never restored from a user's `.<out>.old-*` folder."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    work = tmp_path / "t1"
    work.mkdir()
    data = lines(tmp_path / "data.jsonl", [GOOD] * 4)
    if existing:
        monkeypatch.chdir(work)
        assert invoke(data, "--model", tiny_model, "-o", "prepared").exit_code == 0
    _user_entries(work, dead.stdout.strip())
    before = tree(work)
    monkeypatch.chdir(work)
    result = invoke(data, "--model", tiny_model, "-o", "prepared")
    assert result.exit_code == 0, result.output
    after = tree(work)
    assert {k: v for k, v in after.items() if not k.startswith("prepared/")} == {
        k: v for k, v in before.items() if not k.startswith("prepared/")
    }
    assert sorted(os.listdir(work / "prepared")) == [".kubetune-prepared", "report.json", "summary.md", "train", "validation"]


def test_sigkill_leaves_no_half_output_for_the_component_outputs(tmp_path, tiny_model):
    """The component writes four outputs; each is renamed into place whole (a dataset dir with its marker)."""
    args = [str(tmp_path / "d.jsonl"), str(tiny_model), str(tmp_path / "train"), str(tmp_path / "val")]
    lines(tmp_path / "d.jsonl", [GOOD] * 4)
    script = (
        "import os, signal, sys\n"
        "from kubetune.steps import prepare as core\n"
        "publish = core._publish\n"
        "def once(files, out):\n"
        "    publish(files, out)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "core._publish = once\n"
        "core.prepare(*sys.argv[1:], num_proc=1)\n"
    )
    assert subprocess.run([sys.executable, "-c", script, *args], capture_output=True).returncode == -signal.SIGKILL
    assert sorted(tree(tmp_path / "train")) == [".kubetune-prepared", "data.jsonl", "messages.jsonl"]
    assert not (tmp_path / "val").exists()
    core.prepare(*args, num_proc=1)  # a rerun replaces the marked output and sweeps the dead run's staging
    assert sorted(os.listdir(tmp_path)) == ["d.jsonl", "train", "val"]


# ---------------------------------------------------------------- round 2: URLs, credentials, ranges, keys, model

SECRET = "Pa55wordXyz"
URL_CASES = {
    "https source with a password": (
        ["https://user:Pa55wordXyz@example.invalid/d.jsonl"],
        f"https://example.invalid/d.jsonl: is a https:// URL, which kubetune does not read (give {sources.SUPPORTED})",
    ),
    "ftp source with a password": (
        ["ftp://u:Pa55wordXyz@h/x"],
        f"ftp://h/x: is a ftp:// URL, which kubetune does not read (give {sources.SUPPORTED})",
    ),
    "https validation with a password": (
        ["d.jsonl", "--validation", "https://u:Pa55wordXyz@h/x.jsonl?sig=Pa55wordXyz"],
        f"https://h/x.jsonl: is a https:// URL, which kubetune does not read (give {sources.SUPPORTED})",
    ),
    "s3 source with a password": (
        ["s3://user:Pa55wordXyz@bucket/x.jsonl"],
        "s3://bucket/x.jsonl: holds a user or password: credentials come from the environment only"
        " (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (s3://) or HF_TOKEN (hf://) from a Kubernetes secret)",
    ),
    "hf source with a token": (
        ["hf://Pa55wordXyz@org/name"],
        "hf://org/name: holds a user or password: credentials come from the environment only"
        " (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (s3://) or HF_TOKEN (hf://) from a Kubernetes secret)",
    ),
    "s3 source with a query": (
        ["s3://bucket/x.jsonl?token=Pa55wordXyz"],
        "s3://bucket/x.jsonl: holds a ?query or #fragment, which an s3:// URI may not"
        " (S3 keys holding '?' or '#' are rare: rename the object)",
    ),
    "hf without a name": (["hf://"], "hf://: is not a hub dataset (expected hf://org/name or hf://org/name:split)"),
    "unknown bundled data": (
        ["kubetune://nope"],
        "kubetune://nope: is not a bundled data set (the one there is: kubetune://sample-chat)",
    ),
    "-o a URL with a password": (
        ["d.jsonl", "-o", "https://u:Pa55wordXyz@h/out"],
        "https://h/out: is a URL: outputs are local directories (give a local path)",
    ),
    "-o an s3 URL": (
        ["d.jsonl", "-o", "s3://bucket/out"],
        "s3://bucket/out: is a URL: outputs are local directories (give a local path)",
    ),
    "validation is the training data": (
        ["d.jsonl", "--validation", "./d.jsonl"],
        "./d.jsonl: is the training data itself (give other data, or none to split)",
    ),
    "-o inside the data directory": (
        ["D", "-o", "D/prepared"],
        "D/prepared: is inside the data ({cwd}/D): a later run would read its own output as data",
    ),
    "model URL with a password": (
        ["d.jsonl", "--model", "https://u:Pa55wordXyz@h/m"],
        "https://h/m: does not exist (give a model directory or a hub id)",
    ),
}


@pytest.mark.parametrize("case", URL_CASES)
def test_urls_credentials_and_self_reading_places_are_refused_with_nothing_shown_or_written(
    tmp_path, tiny_model, monkeypatch, case
):
    """Findings 4, 5, 6, 13b/c/e/i: one line, the URL without user, password or query; nothing on disk."""
    args, line = URL_CASES[case]
    monkeypatch.chdir(tmp_path)
    for name, value in {
        "AWS_ACCESS_KEY_ID": "AKIAFAKEFAKEFAKE",
        "AWS_SECRET_ACCESS_KEY": "x",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
    }.items():
        monkeypatch.setenv(name, value)
    lines(tmp_path / "d.jsonl", [GOOD] * 4)
    (tmp_path / "D").mkdir()
    lines(tmp_path / "D" / "d.jsonl", [GOOD] * 4)
    before = tree(tmp_path)
    if "--model" not in args:
        args = [*args, "--model", str(tiny_model)]
    if "-o" not in args:
        args = [*args, "-o", "o"]
    result = invoke(*args)
    assert_one_problem(result, line.format(cwd=tmp_path))
    assert SECRET not in result.output and "supersecret" not in result.output
    assert tree(tmp_path) == before and sorted(os.listdir(tmp_path)) == ["D", "d.jsonl"]


def test_s3_client_errors_are_one_line_naming_the_uri(tmp_path, tiny_model, s3, monkeypatch):
    """Finding 5: botocore's multi-line or credential-quoting errors come out as one redacted line."""
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    result = invoke("s3://Bad_Bucket!/x.jsonl", "--model", tiny_model, "-o", tmp_path / "o")
    problems = [x for x in result.stderr.splitlines() if x.startswith("  - ")]
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 2, result.stderr
    assert problems[0].startswith('  - s3://Bad_Bucket!/x.jsonl: Parameter validation failed: Invalid bucket name "Bad_Bucket!"')
    result = invoke("s3://no-such-bucket/x.jsonl", "--model", tiny_model, "-o", tmp_path / "o")
    assert_one_problem(result, "s3://no-such-bucket/x.jsonl: the bucket does not exist")
    assert not (tmp_path / "o").exists()


def test_verify_refuses_an_s3_uri_with_a_password(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    result = CliRunner().invoke(app, ["verify", "s3://u:Pa55wordXyz@b/p"])
    assert result.exit_code == 2 and SECRET not in result.output
    assert "s3://b/p: holds a user or password: credentials come from the environment only" in result.output


@pytest.mark.parametrize(
    ("option", "value", "line"),
    [
        ("--seed", "-5", "seed: must be an integer from 0 to 2^32-1, got -5"),
        ("--seed", "99999999999999999999999", "seed: must be an integer from 0 to 2^32-1, got 99999999999999999999999"),
        ("--seed", "4294967296", "seed: must be an integer from 0 to 2^32-1, got 4294967296"),
        ("--validation-ratio", "nan", "validation_ratio: must be a finite number in [0, 1), got nan"),
        ("--validation-ratio", "inf", "validation_ratio: must be a finite number in [0, 1), got inf"),
        ("--validation-ratio", "1", "validation_ratio: must be a finite number in [0, 1), got 1.0"),
        ("--validation-ratio", "-0.1", "validation_ratio: must be a finite number in [0, 1), got -0.1"),
    ],
)
def test_seed_and_ratio_out_of_range_are_refused(tmp_path, tiny_model, option, value, line):
    """Finding 13g/h: seeds are 0..2^32-1 like the spec's; the ratio a finite number in [0, 1)."""
    data = lines(tmp_path / "d.jsonl", [GOOD] * 4)
    result = invoke(data, "--model", tiny_model, "-o", tmp_path / "o", option, value)
    assert_one_problem(result, line)
    assert sorted(os.listdir(tmp_path)) == ["d.jsonl"]


@pytest.mark.parametrize(("fmt", "line"), [("jsonl", 2), ("json array", 3)])
def test_a_key_given_twice_in_a_record_is_a_bad_record(tmp_path, tiny_model, fmt, line):
    """Finding 13j: JSON parsers keep one of two values silently; a duplicate key is an invalid record, by on_invalid."""
    twice = b'{"messages": [{"role": "user", "content": "hi", "role": "assistant"}, {"role": "assistant", "content": "yo"}]}'
    good = json.dumps(GOOD).encode()
    if fmt == "jsonl":
        data = lines(tmp_path / "d.jsonl", [GOOD, twice, GOOD])
    else:
        data = tmp_path / "d.json"
        data.write_bytes(b"[\n" + good + b",\n" + twice + b",\n" + good + b"\n]\n")
    out = tmp_path / "o"
    result = invoke(data, "--model", tiny_model, "-o", out)
    assert_one_problem(result, f"{data}:{line}: invalid JSON: the key 'role' appears twice in one object")
    assert not out.exists()
    assert invoke(data, "--model", tiny_model, "-o", out, "--on-invalid", "skip").exit_code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["dropped"] == [
        {
            "where": f"{data}:{line}",
            "reason": "invalid_json",
            "message": "invalid JSON: the key 'role' appears twice in one object",
        }
    ]
    assert report["summary"]["train_samples"] + report["summary"]["validation_samples"] == 2


def test_a_model_that_is_no_directory_with_the_hub_offline_is_refused_locally(tmp_path):
    """Finding 13f: with HF_HUB_OFFLINE set nothing is fetched, and the message says why."""
    data = lines(tmp_path / "d.jsonl", [GOOD] * 4)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    args = [sys.executable, "-m", "kubetune.cli", "prepare", str(data), "--model", "nonexist", "-o", str(tmp_path / "o")]
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2, done.stderr
    problems = [x for x in done.stderr.splitlines() if x.startswith("  - ")]
    why = "is no local directory and not in the hub cache (HF_HUB_OFFLINE is set: nothing is downloaded)"
    assert problems == [f"  - nonexist: {why}"]
    assert not (tmp_path / "o").exists()
