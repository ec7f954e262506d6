"""The training step binds the pipeline's prepared data into each backend's own configuration."""

import pytest
from kubetune.components.train.core import bind

from kubetune.backends import get_backend
from kubetune.contract import validate_spec

COMMON = {"effective_batch_size": 8, "max_seq_len": 512, "learning_rate": 1e-5}


def spec(algorithm, **kwargs):
    extra = {"unfreeze_rank_ratio": 0.25, "max_tokens_per_gpu": 1024} if algorithm == "osft" else {}
    return validate_spec({"algorithm": algorithm, **COMMON, **extra, **kwargs}, require_paths=False)


def test_sft_reads_prepared_data_with_its_own_processing_off(tmp_path):
    bound = bind(spec("sft"), "/models/base", tmp_path / "train", tmp_path / "out", tmp_path / "validation")
    _, args = get_backend("sft").build(bound)
    assert (args.data_path, args.data_output_dir) == (str(tmp_path / "train"), str(tmp_path / "train"))
    assert args.process_data is False and args.ckpt_output_dir == str(tmp_path / "out" / "checkpoints")


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"validation_frequency": 10, "save_best_val_loss": True}, "ours"),  # asks to validate: gets our split
        ({}, None),  # does not ask: no validation during training
        ({"validation_split": 0.2, "validation_frequency": 10}, None),  # its own split wins
    ],
)
def test_osft_validates_on_our_split_when_asked(tmp_path, kwargs, expected):
    (tmp_path / "validation").mkdir()
    bound = bind(spec("osft", **kwargs), "/models/base", tmp_path / "train", tmp_path / "out", tmp_path / "validation")
    _, args = get_backend("osft").build(bound)
    assert args.data_path == str(tmp_path / "train")
    want = str(tmp_path / "validation" / "data.jsonl") if expected else None
    assert args.validation_data_path == want
