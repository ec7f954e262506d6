"""The trained-model folder says which backend trained it (``kubetune-training.json``): the evaluation reads that
backend's metrics files and places checkpoints by that backend's naming (``Backend.checkpoint_position``), and
guesses (registry order, both built-in namings) only for a folder without the record."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from kubetune.backends import registry
from kubetune.backends.training_record import RECORD_FILE, checkpoint_naming, trained_by, write_training_record
from kubetune.checkpoints import Position, find_checkpoints, position
from kubetune.contract import TrainingSpec
from kubetune.errors import KubetuneError
from kubetune.steps.timeline import read_backend_metrics
from tests.support.toy_backend import METRICS_FILE, ToyBackend


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(registry.BACKENDS, ToyBackend.algorithm, ToyBackend)


def trl_and_toy_output(root: Path) -> Path:
    """A folder holding both a TRL log history and the toy's metrics file."""
    (root / "checkpoints").mkdir(parents=True)
    state = {"log_history": [{"step": 1, "loss": 9.0}, {"step": 2, "loss": 8.0}]}
    (root / "checkpoints" / "trainer_state.json").write_text(json.dumps(state))
    rows = [{"step": s, "samples": s, "loss": 1.0 / s} for s in (1, 2, 3)]
    (root / "checkpoints" / METRICS_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_the_record_is_written_whole_and_names_the_backend(tmp_path, toy):
    write_training_record(tmp_path, TrainingSpec(algorithm="toy_sft", backend="toy", params={}))
    assert json.loads((tmp_path / RECORD_FILE).read_text()) == {"algorithm": "toy_sft", "backend": "toy"}
    assert [p.name for p in tmp_path.iterdir()] == [RECORD_FILE]  # no partial file left beside it
    assert isinstance(trained_by(tmp_path), ToyBackend)
    assert trained_by(tmp_path / "absent") is None


def test_evaluation_reads_the_recorded_backends_metrics_not_the_first_found(tmp_path, toy):
    out = trl_and_toy_output(tmp_path)
    assert read_backend_metrics(out).backend == "trl"  # no record: registry order, lora_sft before toy_sft
    write_training_record(out, TrainingSpec(algorithm="toy_sft", backend="toy", params={}))
    series = read_backend_metrics(out)
    assert series.backend == "toy" and [p.loss for p in series.train] == [1.0, 0.5, 1.0 / 3]
    write_training_record(out, TrainingSpec(algorithm="sft", backend="instructlab-training", params={}))
    assert read_backend_metrics(out).train == []  # the recorded backend logged nothing here: no guess at another


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "cannot be read (JSONDecodeError)"),
        ('{"algorithm": "dpo", "backend": "x"}', "names algorithm 'dpo', which no registered backend trains"),
    ],
)
def test_a_bad_record_is_one_line(tmp_path, text, message):
    (tmp_path / RECORD_FILE).write_text(text)
    with pytest.raises(KubetuneError) as refused:
        trained_by(tmp_path)
    (problem,) = refused.value.problems
    assert problem.where == str(tmp_path / RECORD_FILE) and problem.message == message


def test_checkpoints_are_found_and_ordered_by_the_backends_own_naming(tmp_path):
    for name in ("step-10", "step-2", "final"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")
    (tmp_path / "step-12").mkdir()  # named as a checkpoint, holding no model
    toy = ToyBackend().checkpoint_position
    assert [p.name for p in find_checkpoints(tmp_path, named=True, position_of=toy)] == ["step-2", "step-10", "step-12", "final"]
    assert [toy(p) for p in find_checkpoints(tmp_path, position_of=toy)] == [Position(step=2), Position(step=10), None]
    assert [p.name for p in find_checkpoints(tmp_path, named=True)] == ["final", "step-10", "step-2"]  # not the built-ins'


@pytest.mark.parametrize(
    ("algorithm", "name", "expected"),
    [
        ("lora_sft", "checkpoint-40", Position(step=40)),
        ("lora_sft", "samples_40", None),
        ("sft", "samples_1200", Position(samples=1200)),
        ("osft", "samples_1200.0", Position(samples=1200)),
        ("osft", "samples_1200.0_best_val_loss", Position(samples=1200)),
        ("osft", "checkpoint-40", None),
        ("sft", "final", None),
    ],
)
def test_the_built_in_backends_name_checkpoints_as_before(algorithm, name, expected):
    assert registry.get_backend(algorithm).checkpoint_position(Path(name)) == expected


def test_a_folder_without_a_record_is_placed_by_both_built_in_namings():
    assert [position(Path(n)) for n in ("checkpoint-40", "samples_1200.0", "final", "step-3")] == [
        Position(step=40), Position(samples=1200), None, None
    ]


def test_a_folder_without_a_record_is_named_by_the_first_registered_backend_that_knows_a_name(tmp_path, toy):
    """An imported folder of a registered fourth backend: its ``step-N`` checkpoints are ordered by number, not text."""
    for name in ("step-10", "step-5", "checkpoint-7"):
        (tmp_path / "checkpoints" / name).mkdir(parents=True)
        (tmp_path / "checkpoints" / name / "config.json").write_text("{}")
    naming = checkpoint_naming(tmp_path)
    assert [naming(p) for p in find_checkpoints(tmp_path, position_of=naming)] == [
        Position(step=5), Position(step=7), Position(step=10)
    ]


def test_a_training_run_that_fails_leaves_no_record_of_an_earlier_one(tmp_path):
    from kubetune.steps.train import train
    from kubetune.validation import validate_spec

    out = tmp_path / "out"
    write_training_record(out, TrainingSpec(algorithm="sft", backend="instructlab-training", params={}))
    if importlib.util.find_spec("liger_kernel") is not None:
        pytest.skip("liger-kernel is installed here: nothing to refuse")
    spec = validate_spec({"algorithm": "lora_sft", "use_liger_kernel": True}, require_paths=False)
    with pytest.raises(KubetuneError, match="use_liger_kernel"):  # refused before the model is fetched
        train(spec, str(tmp_path / "no-model"), tmp_path / "data", out)
    assert not (out / RECORD_FILE).exists()
