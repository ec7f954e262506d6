import json

import pytest
from kubetune.components.prepare.core import prepare

from kubetune.errors import KubetuneError
from kubetune.runtime import SAMPLE_DATA_URI

GOOD = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
BAD_LINES = [
    ("{not json", "invalid JSON"),
    (json.dumps({"text": "no messages"}), "`messages` must be a non-empty list"),
    (json.dumps({"messages": [{"role": "robot", "content": "x"}]}), "role must be one of"),
    (json.dumps({"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "a"}]}), "non-empty string"),
    (json.dumps({"messages": [{"role": "user", "content": "only a question"}]}), "no assistant turn"),
]


def write(tmp_path, lines):
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(("line", "reason"), BAD_LINES)
def test_bad_line_fails_with_file_line_and_reason_and_writes_nothing(tmp_path, line, reason):
    path = write(tmp_path, [json.dumps(GOOD), json.dumps(GOOD), line])
    with pytest.raises(KubetuneError) as info:
        prepare(str(path), tmp_path / "out/train.jsonl", tmp_path / "out/val.jsonl")
    assert f"{path}:3: " in str(info.value) and reason in str(info.value)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_skip_lists_every_dropped_line(tmp_path):
    path = write(tmp_path, [json.dumps(GOOD)] * 4 + [line for line, _ in BAD_LINES])
    report = prepare(str(path), tmp_path / "train.jsonl", tmp_path / "val.jsonl", 0.25, on_invalid="skip")
    assert [s["line"] for s in report.skipped] == [5, 6, 7, 8, 9]
    assert (report.train_samples, report.validation_samples) == (3, 1)


def test_split_is_deterministic_and_disjoint(tmp_path):
    a = prepare(SAMPLE_DATA_URI, tmp_path / "a/train.jsonl", tmp_path / "a/val.jsonl", 0.1, seed=7)
    prepare(SAMPLE_DATA_URI, tmp_path / "b/train.jsonl", tmp_path / "b/val.jsonl", 0.1, seed=7)
    assert (tmp_path / "a/val.jsonl").read_bytes() == (tmp_path / "b/val.jsonl").read_bytes()
    assert a.validation_samples == 32 and a.train_samples + a.validation_samples == a.total_lines
    b = prepare(SAMPLE_DATA_URI, tmp_path / "c/train.jsonl", tmp_path / "c/val.jsonl", 0.1, seed=8)
    assert (tmp_path / "c/val.jsonl").read_bytes() != (tmp_path / "a/val.jsonl").read_bytes()
    assert b.validation_samples == a.validation_samples


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(KubetuneError, match="does not exist"):
        prepare(str(tmp_path / "nope.jsonl"), tmp_path / "t.jsonl", tmp_path / "v.jsonl")
