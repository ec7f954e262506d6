"""instructlab-training's metrics file read back as one series, across resumes and restarts (rows as 0.16.2 writes them)."""

import json

from kubetune.backends.instructlab import read_instructlab


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _train(step, samples, loss, epoch=0):
    return {"step": step, "epoch": epoch, "samples_seen": samples, "avg_loss": loss}


def test_a_run_resumed_from_an_epoch_end_state_follows_the_first_epoch_instead_of_replacing_it(tmp_path):
    # epoch 0: steps 1-3 (24 samples), validated at step 3; a fresh pod resumes full_state/epoch_0: instructlab restores
    # samples_seen (24) but numbers its steps from 1 again (main_ds.py: global_step = 1, no last_step in the state)
    rows = [_train(1, 8, 6.0), _train(2, 16, 5.9), _train(3, 24, 5.8), {"val_loss": 5.85, "val_num_tokens": 40, "step": 3}]
    rows += [{"timestamp": "hparams row"}, _train(1, 32, 5.7, 1), _train(2, 40, 5.6, 1), {"val_loss": 5.65, "step": 2}]
    rows += [_train(3, 48, 5.5, 1)]
    series = read_instructlab(_write(tmp_path / "m.jsonl", rows))
    assert [(p.step, p.samples, p.loss) for p in series.train] == [
        (1, 8, 6.0),
        (2, 16, 5.9),
        (3, 24, 5.8),
        (4, 32, 5.7),
        (5, 40, 5.6),
        (6, 48, 5.5),
    ]
    assert [(p.step, p.samples, p.loss) for p in series.validation] == [(3, 24, 5.85), (5, 40, 5.65)]


def test_a_run_resumed_mid_epoch_continues_its_steps_and_a_run_started_again_replaces_the_rows_from_its_first_step(tmp_path):
    resumed = [_train(1, 8, 6.0), _train(2, 16, 5.9), _train(3, 24, 5.8), _train(4, 32, 5.7)]
    series = read_instructlab(_write(tmp_path / "a.jsonl", resumed))
    assert [p.step for p in series.train] == [1, 2, 3, 4]
    again = [_train(1, 8, 6.0), _train(2, 16, 5.9), {"val_loss": 5.95, "step": 2}, _train(1, 8, 6.1), _train(2, 16, 6.0)]
    series = read_instructlab(_write(tmp_path / "b.jsonl", again))
    assert [(p.step, p.loss) for p in series.train] == [(1, 6.1), (2, 6.0)]
    assert series.validation == []
