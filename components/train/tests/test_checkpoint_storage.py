"""Pre-emption without a shared volume (``checkpoint_storage="s3://..."``, kubetune/checkpoint_mirror/): for each
algorithm the training step (the component, in a process group of its own as a pod) is SIGTERMed after its first
save, its local output is deleted (a fresh pod), and the same step again restores the newest mirrored save from the
moto server (real HTTP) and trains to the same end as an uninterrupted run. A mirror upload that fails ends the step
with one line naming the S3 prefix."""

from __future__ import annotations

import json
import shutil
import signal

import pytest

from components.train.tests.test_train_kills import OSFT, ROWS, SFT, Step, data  # noqa: F401
from kubetune.checkpoint_mirror import MARKER

LORA = {"algorithm": "lora_sft", "max_steps": 20, "micro_batch_size": 4, "save_steps": 3, "logging_steps": 1, "seed": 0,
        "learning_rate": 1e-3, "sample_packing": False}  # fmt: skip


@pytest.fixture
def bucket(s3, monkeypatch):
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # a fault is seen at once (the mirror retries itself)
    s3.create_bucket(Bucket="ckpt")
    return s3


def markers(s3, prefix: str) -> list[str]:
    listed = s3.list_objects_v2(Bucket="ckpt", Prefix=prefix).get("Contents", [])
    return sorted(o["Key"][len(prefix) + 1 : -len(MARKER) - 1] for o in listed if o["Key"].endswith("/" + MARKER))


def restored_line(log: str) -> str:
    found = [line for line in log.splitlines() if line.startswith("[kubetune] restored ")]
    assert len(found) == 1, log[-3000:]
    return found[0]


def stop_then_resume_fresh(tmp_path, data, spec: dict, ready) -> tuple[str, Step]:  # noqa: F811
    """The step SIGTERMed once ``ready(step)``, its output deleted, then the same step again: the first one's log
    and the second step."""
    out = tmp_path / spec["algorithm"]
    stopped = Step(out, spec, data)
    stopped.wait_for(lambda: ready(stopped), "the first save")
    stopped.process.send_signal(signal.SIGTERM)
    stopped.end()
    shutil.rmtree(out)  # a fresh pod: nothing of the first one's disk
    again = Step(out, spec, data)
    assert again.end() == 0, again.text()[-3000:]
    return stopped.log.read_text()[stopped.start : again.start], again


@pytest.mark.slow
def test_lora_sigterm_mirrors_and_a_fresh_pod_resumes_from_the_mirror(tmp_path, data, bucket):  # noqa: F811
    spec = {**LORA, "checkpoint_storage": "s3://ckpt/lora"}
    ready = lambda step: (step.out / "checkpoints" / "checkpoint-3" / "trainer_state.json").is_file()  # noqa: E731
    stopped, again = stop_then_resume_fresh(tmp_path, data, spec, ready)
    first = json.loads(stopped.splitlines()[-1].removeprefix("RESULT "))
    assert first["stopped_by"] == "SIGTERM"
    assert "[kubetune] mirrored checkpoint-3 to s3://ckpt/lora/checkpoint-3" in stopped
    saved = first["checkpoints"][-1].removeprefix("checkpoints/")  # the SIGTERM save, the run's last
    assert f"[kubetune] mirrored {saved} to s3://ckpt/lora/{saved}" in stopped and saved != "checkpoint-3"
    assert again.result()["resumed_from"] == saved  # from the mirror, not from zero
    assert restored_line(again.text()).startswith(f"[kubetune] restored {saved} (")
    state = json.loads((again.out / "checkpoints" / "trainer_state.json").read_text())
    assert state["global_step"] == LORA["max_steps"]  # as an uninterrupted run
    assert [e["step"] for e in state["log_history"] if "loss" in e] == list(range(1, LORA["max_steps"] + 1))
    assert markers(bucket, "lora") == ["checkpoint-15", "checkpoint-18", "checkpoint-20"]  # the last 3 (the default)


@pytest.mark.slow
def test_osft_sigterm_mirrors_the_full_state_and_a_fresh_pod_resumes_from_it(tmp_path, data, bucket):  # noqa: F811
    pytest.importorskip("mini_trainer", reason="mini-trainer is the `osft` extra")
    spec = {**OSFT, "checkpoint_storage": "s3://ckpt/osft"}
    stopped, again = stop_then_resume_fresh(tmp_path, data, spec, lambda step: step.rows(ROWS["osft"]))
    (state,) = [m for m in markers(bucket, "osft") if m.startswith("full_state_checkpoints/")]
    assert stopped.strip().splitlines()[-1] == (  # exit 2: a full state, no model yet
        f"  - training: was stopped before its first model save; its full state is mirrored to s3://ckpt/osft/{state} "
        "(run the step again with the same checkpoint_storage to resume from it)"
    )
    assert again.result()["resumed_from"] == state
    assert restored_line(again.text()).startswith(f"[kubetune] restored {state} (")
    steps = [row["step"] for row in again.rows(ROWS["osft"])]  # the mirrored metrics file, continued
    assert steps == list(range(1, OSFT["max_steps"] + 1))


@pytest.mark.slow
def test_sft_sigterm_in_epoch_2_resumes_a_fresh_pod_from_the_mirrored_epoch_end(tmp_path, data, bucket):  # noqa: F811
    """instructlab-training's mid-epoch SIGTERM save is one it resumes wrongly (kubetune/backends/resume.py): not
    mirrored; the fresh pod resumes from the end of epoch 1 and trains epoch 2 whole."""
    pytest.importorskip("instructlab.training", reason="instructlab-training is the `sft` extra")
    spec = {**SFT, "num_epochs": 2, "checkpoint_storage": "s3://ckpt/sft"}
    ready = lambda step: len(step.rows(ROWS["sft"])) >= 4  # noqa: E731  (a step of epoch 2: 3 steps an epoch)
    stopped, again = stop_then_resume_fresh(tmp_path, data, spec, ready)
    assert "[kubetune] mirrored full_state/epoch_0 to " in stopped and "mirrored full_state/epoch_1" not in stopped
    assert restored_line(again.text()).startswith("[kubetune] restored full_state/epoch_0 (")
    result = again.result()
    assert result["final_model"] == "checkpoints/hf_format/samples_48"  # both epochs of 24 samples
    # the mirrored metrics file, continued: epoch 1's 3 steps (the first pod's), then epoch 2's 3 (this pod's), as an
    # uninterrupted run trains them (instructlab-training numbers a resumed run's steps from 1 again)
    rows = [(r["epoch"], r["samples_seen"]) for r in again.rows(ROWS["sft"])]
    assert rows[:3] == [(0, 8), (0, 16), (0, 24)] and rows[-3:] == [(1, 32), (1, 40), (1, 48)]


@pytest.mark.slow
def test_a_failed_mirror_upload_ends_the_step_with_one_line_naming_the_prefix(tmp_path, data, bucket, faulty_proxy, monkeypatch):  # noqa: F811
    fail = lambda method, path: "fail" if method == "PUT" and "/checkpoint-2/" in path else None  # noqa: E731
    monkeypatch.setenv("AWS_ENDPOINT_URL", faulty_proxy(fail).url)
    step = Step(tmp_path / "out", {**LORA, "max_steps": 4, "save_steps": 2, "checkpoint_storage": "s3://ckpt/fail"}, data)
    assert step.end() == 2, step.text()[-3000:]
    tail = step.text().strip().splitlines()[-2:]
    assert tail[0] == "checkpoint mirror failed: 1 problem(s)", step.text()[-3000:]
    assert tail[1].startswith("  - s3://ckpt/fail/checkpoint-2: ") and "that save is not marked complete" in tail[1]
    assert "Traceback" not in step.text() and "checkpoint-2" not in markers(bucket, "fail")
