"""A restarted sft/osft step never trains less than asked: a full state its backend would resume by skipping
untrained batches is set aside (``not-resumable/``) with one line, and the step trains from the beginning; an
epoch-mode run that ends having seen fewer samples than asked fails with one line."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from components.train.tests.test_train_osft import OSFT, finished, logged_steps, prepared, start, wait_for  # noqa: F401
from kubetune.backends.resume import NOT_RESUMABLE_DIR, instructlab_skip, mini_trainer_skip, require_every_sample
from kubetune.checkpoints import find_checkpoints
from kubetune.errors import KubetuneError
from kubetune.steps.timeline import read_backend_metrics

SAMPLES, BATCH = 20, 4  # 5 steps an epoch, 2 epochs
TWO_EPOCHS = {**OSFT, "effective_batch_size": BATCH, "training_mode": "epoch", "max_epochs": 2, "checkpoint_at_epoch": True}


@pytest.mark.slow
def test_an_osft_run_stopped_in_epoch_2_trains_again_from_the_start_and_sees_every_sample(prepared, tmp_path):  # noqa: F811
    import torch

    data = tmp_path / "data"
    data.mkdir()
    rows = (prepared.train / "data.jsonl").read_text().splitlines(keepends=True)
    (data / "data.jsonl").write_text("".join(rows[:SAMPLES]))
    out = tmp_path / "out"
    run = start(out, TWO_EPOCHS, prepared, data)
    try:
        wait_for(lambda: max(logged_steps(out), default=0) >= 7, run, "a step of epoch 2", out)
        run.send_signal(signal.SIGTERM)
        stopped = finished(run, out)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert stopped["metrics"]["stopped_by"] == "SIGTERM", stopped
    state = out / "checkpoints" / stopped["metrics"]["full_state_saved"]
    meta = torch.load(state / "training_state.pt", weights_only=False)
    assert meta["epoch"] == 1 and meta["step"] >= 7  # mini-trainer would skip the rest of epoch 2 resuming this

    again = start(out, TWO_EPOCHS, prepared, data)
    result = finished(again, out)
    log = (out / "step.log").read_text()
    loud = [line for line in log.splitlines() if "NOT RESUMING" in line]
    assert len(loud) == 1 and f"full_state_checkpoints/{state.name} (mini-trainer bug" in loud[0], log[-3000:]
    assert "starts again" in loud[0] and "every step asked for" in loud[0]
    moved = out / "checkpoints" / NOT_RESUMABLE_DIR / "full_state_checkpoints" / state.name
    assert (moved / "training_state.pt").is_file() and not state.exists()  # set aside, never deleted
    assert result["metrics"]["resumed_from"] == ""
    assert (out / "checkpoints" / NOT_RESUMABLE_DIR / "hf_format" / "samples_20.0" / "config.json").is_file()  # 1st attempt's
    assert result["saved"] == ["samples_20.0", "samples_40.0"]  # saved again by the new run
    assert NOT_RESUMABLE_DIR not in {part for p in find_checkpoints(out) for part in p.parts}  # evaluation skips it
    assert result["final_model"] == f"samples_{2 * SAMPLES}.0", result  # every sample of both epochs
    series = read_backend_metrics(out)  # the first attempt's rows are replaced by the second's
    assert [p.step for p in series.train] == list(range(1, 11))


def _state(path: Path, name: str, meta: dict) -> Path:
    import torch

    path.mkdir(parents=True)
    torch.save(meta, path / name)
    return path


def test_which_full_states_each_backend_would_resume_wrongly(tmp_path):
    first = _state(tmp_path / "m0", "training_state.pt", {"epoch": 0, "step": 3})
    second = _state(tmp_path / "m1", "training_state.pt", {"epoch": 1, "step": 7})
    assert mini_trainer_skip(first) is None
    assert "skip 7 batches" in mini_trainer_skip(second) and "epoch 2" in mini_trainer_skip(second)
    end = _state(tmp_path / "i0", "training_metadata.json", {"current_epoch": 0, "samples_seen": 40})
    mid0 = _state(tmp_path / "i1", "training_metadata.json", {"current_epoch": 0, "samples_seen": 8, "global_step": 2})
    mid1 = _state(tmp_path / "i2", "training_metadata.json", {"current_epoch": 1, "samples_seen": 56, "global_step": 7})
    assert instructlab_skip(end) is None
    assert "one ahead" in instructlab_skip(mid0) and "skip 7 batches" in instructlab_skip(mid1)


def test_an_epoch_run_that_saw_fewer_samples_than_asked_fails_with_one_line(tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text("{}\n" * SAMPLES)
    require_every_sample(tmp_path / "samples_40", data, 2, None)
    require_every_sample(tmp_path / "samples_40.0", data, 2, None)
    with pytest.raises(KubetuneError) as error:
        require_every_sample(tmp_path / "samples_32.0", data, 2, None)
    assert "seen 32 samples, fewer than the 40 asked (2 epochs of 20)" in str(error.value)
