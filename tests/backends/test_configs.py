"""Specs become the backends' real configuration objects, with exactly the values the user gave."""

from pathlib import Path

import pytest

from kubetune.backends.base import TrainingRun
from kubetune.backends.registry import get_backend
from kubetune.validation import validate_spec

PATHS = {"model_path": "/models/base", "data_path": "/data/train.jsonl", "ckpt_output_dir": "/out"}


def test_osft_spec_builds_mini_trainer_args():
    pytest.importorskip("mini_trainer", reason="mini-trainer is the `osft` extra")
    spec = validate_spec({
        "algorithm": "osft", **PATHS, "unfreeze_rank_ratio": 0.5, "effective_batch_size": 16,
        "max_tokens_per_gpu": 4096, "max_seq_len": 2048, "learning_rate": 5e-6, "num_epochs": 2,
        "warmup_steps": 5, "use_liger": True, "osft": False, "training_mode": "infinite",
        "lr_scheduler": "constant_with_warmup", "min_samples_per_checkpoint": 500,
        "validation_data_path": "/data/val.jsonl", "validation_frequency": 20,
        "save_best_val_loss": True, "nproc_per_node": 4,
    })  # fmt: skip
    torch_args, args = get_backend("osft").build(spec)
    assert (args.model_name_or_path, args.data_path, args.output_dir) == ("/models/base", "/data/train.jsonl", "/out")
    assert (args.batch_size, args.max_epochs, args.num_warmup_steps) == (16, 2, 5)
    assert args.osft is False and args.osft_unfreeze_rank_ratio == 0.5 and args.use_liger_kernels is True
    assert args.training_mode.value == "infinite" and args.min_samples_per_checkpoint == 500
    assert (args.validation_data_path, args.validation_frequency, args.save_best_val_loss) == ("/data/val.jsonl", 20, True)
    assert torch_args.nproc_per_node == 4 and torch_args.nnodes == 1


def test_osft_defaults_to_osft_on():
    pytest.importorskip("mini_trainer", reason="mini-trainer is the `osft` extra")
    spec = validate_spec({
        "algorithm": "osft", **PATHS, "unfreeze_rank_ratio": 0.5, "effective_batch_size": 16,
        "max_tokens_per_gpu": 4096, "max_seq_len": 2048, "learning_rate": 5e-6,
    })  # fmt: skip
    assert get_backend("osft").build(spec)[1].osft is True


def test_sft_spec_builds_instructlab_args():
    pytest.importorskip("instructlab.training", reason="instructlab-training is the `sft` extra")
    spec = validate_spec({
        "algorithm": "sft", **PATHS, "max_seq_len": 1024, "max_tokens_per_gpu": 8192, "effective_batch_size": 32,
        "learning_rate": 2e-5, "beta1": 0.9, "beta2": 0.99, "eps": 1e-7, "weight_decay": 0.1, "seed": 7,
        "validation_split": 0.05, "validation_frequency": 50, "disable_flash_attn": True,
    })  # fmt: skip
    torch_args, args = get_backend("sft").build(spec)
    assert (args.max_batch_len, args.adamw_betas, args.adamw_eps, args.adamw_weight_decay) == (8192, (0.9, 0.99), 1e-7, 0.1)
    assert (args.random_seed, args.validation_split, args.validation_frequency) == (7, 0.05, 50)
    assert args.disable_flash_attn is True and args.data_output_dir == "/out/data"
    assert torch_args.nproc_per_node == "gpu"


def test_lora_spec_builds_sft_and_lora_configs():
    pytest.importorskip("trl", reason="TRL is the `lora` extra")
    spec = validate_spec({
        **PATHS, "algorithm": "lora_sft", "lora_r": 4, "lora_alpha": 8, "eval_steps": 5, "num_epochs": 1,
        "sample_packing": False, "weight_decay": 0.01, "use_rslora": True, "tensorboard_log_dir": "/tb",
    })  # fmt: skip
    sft_config, lora_config = get_backend("lora_sft").build(spec, TrainingRun(Path("/validation")))
    assert sft_config.eval_steps == 5 and sft_config.eval_strategy.value == "steps"
    assert sft_config.weight_decay == 0.01 and sft_config.num_train_epochs == 1 and sft_config.packing is False
    assert "tensorboard" in sft_config.report_to
    assert (lora_config.r, lora_config.lora_alpha, lora_config.use_rslora) == (4, 8, True)


def test_lora_configs_are_built_for_curated_parameters_alone():
    """No backend kwarg at all: TRL's SFTConfig still judges the curated lr_scheduler (it used to be skipped),
    and its plain ValueError is mapped to the curated field by the value it quotes, the value not shown."""
    pytest.importorskip("trl", reason="TRL is the `lora` extra")
    problems = get_backend("lora_sft").config_problems({"lr_scheduler": "bogus"}, {})
    assert [p.where for p in problems] == ["lr_scheduler"]
    assert problems[0].message.startswith("is refused by unsloth's configuration: <value> is not a valid SchedulerType")
    assert "bogus" not in problems[0].message


def test_a_backend_error_naming_its_own_field_maps_to_the_curated_name():
    backend = get_backend("lora_sft")
    error = ValueError("lr_scheduler_type must be set with warmup")
    assert [p.where for p in backend._refusals(error, {"lr_scheduler": "cosine", "optim": "sgd"})] == ["lr_scheduler"]
    assert [p.where for p in backend._refusals(ValueError("no field here"), {"optim": "sgd"})] == ["spec"]
