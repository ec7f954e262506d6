import gzip
import json
from collections import Counter
from pathlib import Path

import pytest

from kubetune.embedded.sample_data import SAMPLE_DATA
from kubetune.errors import KubetuneError
from kubetune.runtime import SAMPLE_DATA_URI
from kubetune.steps.prepare import prepare

GOOD = {"messages": [{"role": "user", "content": "What is 2 plus 2?"}, {"role": "assistant", "content": "2 plus 2 is 4."}]}
LONG = {
    "messages": [{"role": "user", "content": "Repeat: " + "red blue " * 60}, {"role": "assistant", "content": "red blue " * 60}]
}
BAD_LINES = {
    "invalid JSON": ("{not json", "invalid JSON"),
    "missing messages": (json.dumps({"text": "no messages"}), "`messages` must be a non-empty list"),
    "empty messages": (json.dumps({"messages": []}), "`messages` must be a non-empty list"),
    "unknown role": (json.dumps({"messages": [{"role": "robot", "content": "x"}]}), "messages[0].role must be one of"),
    "non-string content": (
        json.dumps({"messages": [{"role": "user", "content": 7}, {"role": "assistant", "content": "a"}]}),
        "messages[0].content must be a non-empty string, got int",
    ),
    "empty content": (
        json.dumps({"messages": [{"role": "user", "content": " "}, {"role": "assistant", "content": "a"}]}),
        "messages[0].content must be a non-empty string, got an empty string",
    ),
    "no assistant turn": (json.dumps({"messages": [{"role": "user", "content": "only a question"}]}), "no assistant turn"),
    "not UTF-8": (b'{"messages": "\xff"}', "not UTF-8"),
}


def write(path: Path, lines: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join((line if isinstance(line, bytes) else line.encode()) + b"\n" for line in lines))
    return path


def run(tmp_path, data, model, **options):
    out = tmp_path / "out"
    summary = prepare(
        str(data),
        str(model),
        out / "train",
        out / "validation",
        report_out=out / "report.json",
        summary_out=out / "summary.md",
        **options,
    )
    return summary, out


def rows(directory: Path, name: str = "data.jsonl") -> list[dict]:
    return [json.loads(line) for line in (directory / name).read_text().splitlines()]


@pytest.mark.parametrize("case", BAD_LINES)
def test_bad_line_fails_with_file_line_and_reason_and_writes_nothing(tmp_path, tiny_model, case):
    line, reason = BAD_LINES[case]
    data = write(tmp_path / "in" / "data.jsonl", [json.dumps(GOOD), "", json.dumps(GOOD), line])
    with pytest.raises(KubetuneError) as info:
        run(tmp_path, data, tiny_model, num_proc=1)
    assert f"{data}:4: " in str(info.value) and reason in str(info.value)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())  # no output, no staging left


def test_too_long_with_fail_policy_names_line_and_length(tmp_path, tiny_model):
    data = write(tmp_path / "data.jsonl", [json.dumps(GOOD), json.dumps(LONG)])
    with pytest.raises(KubetuneError, match=rf"{data}:2: \d+ tokens, longer than max_seq_len=64"):
        run(tmp_path, data, tiny_model, max_seq_len=64, too_long="fail", num_proc=1)
    assert not list((tmp_path / "out").iterdir())


def test_every_problem_is_reported_at_once(tmp_path, tiny_model):
    data = write(tmp_path / "data.jsonl", [json.dumps(GOOD)] + [line for line, _ in BAD_LINES.values()])
    with pytest.raises(KubetuneError) as info:
        run(tmp_path, data, tiny_model, num_proc=2, batch_size=2)
    assert [p.where for p in info.value.problems] == [f"{data}:{n}" for n in range(2, 2 + len(BAD_LINES))]


def test_skip_lists_every_dropped_line_in_report_metrics_and_summary(tmp_path, tiny_model):
    bad = [line for line, _ in BAD_LINES.values()]
    data = write(tmp_path / "data.jsonl", [json.dumps(GOOD)] * 4 + bad + [json.dumps(LONG)])
    summary, out = run(tmp_path, data, tiny_model, on_invalid="skip", max_seq_len=64, validation_ratio=0.25, num_proc=1)
    report = json.loads((out / "report.json").read_text())
    assert [d["where"] for d in report["dropped"]] == [f"{data}:{n}" for n in range(5, 5 + len(bad) + 1)]
    assert report["dropped"][-1]["reason"] == "too_long"
    assert summary.dropped == len(bad) + 1 and summary.dropped_by_reason["invalid_json"] == 2
    assert (summary.train_samples, summary.validation_samples) == (3, 1)
    markdown = (out / "summary.md").read_text()
    assert "| samples | 3 | 1 |" in markdown and f"`{data}:5`: invalid JSON" in markdown


def test_outputs_feed_every_backend_and_match_messages(tmp_path, tiny_model):
    from mini_trainer.sampler import JsonlDataset

    summary, out = run(tmp_path, SAMPLE_DATA_URI, tiny_model, max_seq_len=128)
    train = rows(out / "train")
    assert set(train[0]) == {"input_ids", "labels", "len", "num_loss_counted_tokens"}
    assert all(r["len"] == len(r["input_ids"]) == len(r["labels"]) <= 128 for r in train)
    assert len(rows(out / "train", "messages.jsonl")) == len(train) == summary.train_samples
    # mini-trainer reads it as its own pre-tokenized data; instructlab-training reads data_output_dir/data.jsonl
    assert len(JsonlDataset(str(out / "train" / "data.jsonl"), max_seq_len=128)) == len(train)
    tokens = summary.train_tokens
    assert tokens.min <= tokens.mean <= tokens.p95 <= tokens.max <= 128
    assert tokens.total == sum(r["len"] for r in train)


def test_split_is_deterministic_disjoint_and_independent_of_workers(tmp_path, tiny_model):
    a, out_a = run(tmp_path / "a", SAMPLE_DATA_URI, tiny_model, seed=7, num_proc=1)
    b, out_b = run(tmp_path / "b", SAMPLE_DATA_URI, tiny_model, seed=7, num_proc=2, batch_size=16)
    for part in ("train", "validation"):
        for name in ("data.jsonl", "messages.jsonl"):
            assert (out_a / part / name).read_bytes() == (out_b / part / name).read_bytes()
    assert a.validation_samples == 32 and a.train_samples + a.validation_samples == a.records == 320
    split = Counter(
        json.dumps(r, sort_keys=True) for part in ("train", "validation") for r in rows(out_a / part, "messages.jsonl")
    )
    assert split == Counter(json.dumps(json.loads(line), sort_keys=True) for line in SAMPLE_DATA.read_text().splitlines())
    deduped, out_d = run(tmp_path / "d", SAMPLE_DATA_URI, tiny_model, seed=7, dedup=True)
    train = {json.dumps(r) for r in rows(out_d / "train", "messages.jsonl")}
    assert deduped.dropped_by_reason["duplicate"] > 0 and len(train) == deduped.train_samples
    assert not train & {json.dumps(r) for r in rows(out_d / "validation", "messages.jsonl")}
    _, out_c = run(tmp_path / "c", SAMPLE_DATA_URI, tiny_model, seed=8, num_proc=1)
    assert (out_c / "validation" / "data.jsonl").read_bytes() != (out_a / "validation" / "data.jsonl").read_bytes()


def test_validation_file_dedup_and_truncation(tmp_path, tiny_model):
    other = {"messages": [{"role": "user", "content": "Name a color."}, {"role": "assistant", "content": "red"}]}
    long_answer = {
        "messages": [{"role": "user", "content": "Repeat red blue."}, {"role": "assistant", "content": "red blue " * 60}]
    }
    train = write(tmp_path / "train.jsonl", [json.dumps(GOOD), json.dumps(GOOD), json.dumps(long_answer), json.dumps(LONG)])
    val = write(tmp_path / "val.jsonl", [json.dumps(GOOD), json.dumps(other)])
    out = tmp_path / "out"
    summary = prepare(
        str(train),
        str(tiny_model),
        out / "t",
        out / "v",
        validation_uri=str(val),
        dedup=True,
        too_long="truncate",
        max_seq_len=64,
    )
    assert (summary.train_samples, summary.validation_samples, summary.truncated) == (2, 1, 1)
    # line 2 of train, line 1 of val (it would leak training data), and LONG: its first 64 tokens hold no answer
    assert summary.dropped_by_reason == {"no_label_tokens": 1, "duplicate": 2}
    long = rows(out / "t")[1]
    assert long["len"] == 64 and long["labels"][-1] != -100
    assert rows(out / "v", "messages.jsonl") == [other]


def test_alpaca_and_unmask_and_reasoning_records(tmp_path, tiny_model):
    records = [
        {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
        {**GOOD, "unmask": True},
        {
            "messages": [
                {"role": "user", "content": "Why?"},
                {"role": "assistant", "content": "Because.", "reasoning_content": "think"},
            ]
        },
    ]
    data = write(tmp_path / "data.jsonl", [json.dumps(r) for r in records])
    summary, out = run(tmp_path, data, tiny_model, validation_ratio=0)
    messages = rows(out / "train", "messages.jsonl")
    assert messages[0]["messages"] == [
        {"role": "user", "content": "Add the numbers.\n\n2 and 3"},
        {"role": "assistant", "content": "5"},
    ]
    assert messages[1]["unmask"] is True and summary.train_samples == 3


def test_pretraining_documents(tmp_path, tiny_model):
    from transformers import AutoTokenizer

    data = write(tmp_path / "docs.jsonl", [json.dumps({"text": "red blue green"}), json.dumps({"text": "cat dog"})])
    summary, out = run(tmp_path, data, tiny_model, data_format="document", document_column="text", validation_ratio=0)
    eos = AutoTokenizer.from_pretrained(tiny_model).eos_token_id
    docs = rows(out / "train")
    assert [d["labels"] for d in docs] == [d["input_ids"] for d in docs] and all(d["input_ids"][-1] == eos for d in docs)
    chat = write(tmp_path / "chat.jsonl", [json.dumps(GOOD)])
    with pytest.raises(KubetuneError, match=r"chat.jsonl:1: pretraining data needs a `text` field"):
        run(tmp_path / "again", chat, tiny_model, data_format="document", document_column="text")
    docs_as_chat = write(tmp_path / "docs2.jsonl", [json.dumps({"document": "text"})])
    with pytest.raises(KubetuneError, match="set is_pretraining"):
        run(tmp_path / "third", docs_as_chat, tiny_model)


def test_parquet_json_array_gzip_directory_and_saved_dataset_sources(tmp_path, tiny_model):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Dataset

    bad = {"messages": [{"role": "user", "content": "q"}]}
    table = pa.Table.from_pylist([GOOD, GOOD, bad])
    pq.write_table(table, tmp_path / "data.parquet")
    with pytest.raises(KubetuneError, match=r"data.parquet:row 3: no assistant turn"):
        run(tmp_path / "p", tmp_path / "data.parquet", tiny_model)

    (tmp_path / "array.json").write_text("[\n  " + json.dumps(GOOD) + ",\n  " + json.dumps(bad) + "\n]\n")
    with pytest.raises(KubetuneError, match=r"array.json:3: no assistant turn"):
        run(tmp_path / "a", tmp_path / "array.json", tiny_model)
    (tmp_path / "broken.json").write_text("[\n" + json.dumps(GOOD) + ",\n{oops}\n]")
    with pytest.raises(KubetuneError, match=r"broken.json:3: invalid JSON"):
        run(tmp_path / "b", tmp_path / "broken.json", tiny_model)

    shards = tmp_path / "shards"
    write(shards / "a.jsonl", [json.dumps(GOOD)] * 3)
    with gzip.open(shards / "b.jsonl.gz", "wt") as f:
        f.write(json.dumps(GOOD) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(KubetuneError, match=r"shards/b.jsonl.gz:2: no assistant turn"):
        run(tmp_path / "d", shards, tiny_model)
    summary, _ = run(tmp_path / "d2", shards, tiny_model, on_invalid="skip", validation_ratio=0)
    assert summary.train_samples == 4

    Dataset.from_list([GOOD] * 5).save_to_disk(str(tmp_path / "saved"))
    summary, _ = run(tmp_path / "s", tmp_path / "saved", tiny_model, validation_ratio=0.2)
    assert (summary.train_samples, summary.validation_samples) == (4, 1)


def test_missing_or_unknown_sources_and_bad_parameters_are_clear_errors(tmp_path, tiny_model):
    with pytest.raises(KubetuneError, match="does not exist"):
        run(tmp_path, tmp_path / "nope.jsonl", tiny_model)
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(KubetuneError, match="is not a data file"):
        run(tmp_path, tmp_path / "notes.txt", tiny_model)
    with pytest.raises(KubetuneError) as info:
        run(tmp_path, SAMPLE_DATA_URI, tiny_model, validation_ratio=1.5, on_invalid="ignore")
    assert {p.where for p in info.value.problems} == {"validation_ratio", "on_invalid"}


def test_hub_dataset_is_routed_to_the_hub_and_fails_clearly_offline(tmp_path, tiny_model, monkeypatch):
    # No network here: this checks the routing and the error, not a download. The libraries read their
    # offline switches at import time, so they are set on the loaded modules as well as in the environment.
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(KubetuneError, match="hf://someone/chat-data: cannot be loaded from the Hugging Face hub"):
        run(tmp_path, "hf://someone/chat-data", tiny_model)


def test_s3_object_and_prefix_over_real_http(tmp_path, tiny_model, s3):
    s3.create_bucket(Bucket="data")
    body = "".join(json.dumps(GOOD) + "\n" for _ in range(10))
    s3.put_object(Bucket="data", Key="chat/part-0.jsonl", Body=body)
    s3.put_object(Bucket="data", Key="chat/part-1.jsonl", Body=body + '{"messages": 3}\n')
    with pytest.raises(KubetuneError, match=r"s3://data/chat/part-1.jsonl:11: `messages` must be a non-empty list"):
        run(tmp_path / "one", "s3://data/chat/part-1.jsonl", tiny_model)
    summary, _ = run(tmp_path / "prefix", "s3://data/chat/", tiny_model, on_invalid="skip", validation_ratio=0.1)
    assert summary.train_samples + summary.validation_samples == 20 and summary.dropped == 1
    assert not list((tmp_path / "prefix" / "out").glob(".prepare-*"))  # the download went away with the staging area


def test_s3_errors_before_anything_is_written(tmp_path, tiny_model, s3, monkeypatch):
    with pytest.raises(KubetuneError, match="s3://no-such-bucket/x.jsonl: the bucket does not exist"):
        run(tmp_path, "s3://no-such-bucket/x.jsonl", tiny_model)
    s3.create_bucket(Bucket="empty")
    with pytest.raises(KubetuneError, match="s3://empty/missing.jsonl: no such object or prefix"):
        run(tmp_path, "s3://empty/missing.jsonl", tiny_model)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(KubetuneError, match="no S3 credentials found"):
        run(tmp_path, "s3://empty/missing.jsonl", tiny_model)
    assert not list((tmp_path / "out").iterdir())
