"""Every validation rule of the kwargs contract, for all three algorithms."""

import json

import pytest

from kubetune.errors import KubetuneError
from kubetune.validation import load_spec, validate_spec

PATHS = {"model_path": "/models/base", "data_path": "/data/train.jsonl", "ckpt_output_dir": "/out"}
OSFT = {
    "algorithm": "osft",
    **PATHS,
    "unfreeze_rank_ratio": 0.25,
    "effective_batch_size": 16,
    "max_tokens_per_gpu": 4096,
    "max_seq_len": 2048,
    "learning_rate": 5e-6,
}
SFT = {"algorithm": "sft", **PATHS, "max_seq_len": 2048, "effective_batch_size": 16, "learning_rate": 1e-5}
LORA = {"algorithm": "lora_sft", **PATHS, "lora_r": 8}


def problems(document, **kwargs) -> list[str]:
    with pytest.raises(KubetuneError) as info:
        validate_spec(document, **kwargs)
    return [str(p) for p in info.value.problems]


def test_osft_typo_is_rejected_with_suggestion():
    [problem] = problems({**OSFT, "validaton_split": 0.1})
    assert "`validaton_split`" in problem and "did you mean `validation_split`" in problem


def test_osft_false_is_accepted_and_reaches_mini_trainer():
    spec = validate_spec({k: v for k, v in OSFT.items() if k != "unfreeze_rank_ratio"} | {"osft": False})
    assert spec.backend_kwargs == {"osft": False}


def test_osft_needs_ratio_when_osft_is_on():
    assert any("unfreeze_rank_ratio" in p for p in problems({k: v for k, v in OSFT.items() if k != "unfreeze_rank_ratio"}))


@pytest.mark.parametrize("ratio", [0, -0.1, 1.5])
def test_unfreeze_rank_ratio_range(ratio):
    assert any(p.startswith("`unfreeze_rank_ratio`") for p in problems({**OSFT, "unfreeze_rank_ratio": ratio}))


def test_lora_eval_steps_accepted_and_typo_rejected():
    assert validate_spec({**LORA, "eval_steps": 10}).params["eval_steps"] == 10
    [problem] = problems({**LORA, "eval_stepz": 10})
    assert "did you mean `eval_steps`" in problem


def test_lora_sft_config_field_is_a_backend_kwarg():
    spec = validate_spec({**LORA, "eval_strategy": "steps", "weight_decay": 0.01, "use_rslora": True})
    assert spec.backend_kwargs == {"eval_strategy": "steps", "weight_decay": 0.01, "use_rslora": True}


def test_backend_name_next_to_curated_name_is_rejected():
    [problem] = problems({**OSFT, "num_epochs": 2, "max_epochs": 3})
    assert "`max_epochs`" in problem and "use `num_epochs`" in problem


def test_backend_name_alone_means_the_curated_parameter():
    spec = validate_spec({**OSFT, "max_epochs": 3})
    assert spec.params["num_epochs"] == 3 and "max_epochs" not in spec.backend_kwargs


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({**OSFT, "learning_rate": 0}, "learning_rate"),
        ({**SFT, "learning_rate": -1.0}, "learning_rate"),
        ({**LORA, "lora_r": 0}, "lora_r"),
        ({**LORA, "lora_dropout": 1.0}, "lora_dropout"),
        ({**OSFT, "max_seq_len": 8192}, "max_seq_len"),
        ({**SFT, "num_epochs": "3"}, "num_epochs"),
        ({**LORA, "target_modules": "q_proj"}, "target_modules"),
        ({**SFT, "master_port": 70000}, "master_port"),
        ({**OSFT, "validation_split": "ten percent"}, "validation_split"),
        ({**LORA, "eval_strategy": "sometimes"}, "eval_strategy"),
        ({**OSFT, "training_mode": "forever"}, "training_mode"),
    ],
)
def test_wrong_type_or_impossible_value_names_the_field(document, field):
    assert any(p.startswith(f"`{field}`") for p in problems(document))


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"training_mode": "step"}, "max_steps"),
        ({"training_mode": "token", "max_tokens": 0}, "max_tokens"),
        ({"validation_split": 0.1}, "validation_split"),
        ({"validation_split": 0.1, "validation_data_path": "/v.jsonl", "validate_at_final": True}, "validation_data_path"),
        ({"save_best_val_loss": True}, "save_best_val_loss"),
        ({"min_samples_per_validation": 0, "validation_data_path": "/v.jsonl"}, "min_samples_per_validation"),
        ({"validation_split": 1.0, "validate_at_final": True}, "validation_split"),
        ({"rdzv_endpoint": "h:1", "master_addr": "h"}, "master_addr"),
        ({"callbacks": []}, "callbacks"),
        ({"training_mode": "infinite"}, "lr_scheduler"),  # cosine (the default) needs a number of steps
        ({"is_pretraining": True}, "block_size"),  # the pretraining rule, in the backends (rules.pretraining_problems)
    ],
)
def test_mini_trainer_rules(extra, field):
    assert any(p.startswith(f"`{field}`") for p in problems({**OSFT, **extra}))


def test_mini_trainer_infinite_mode_is_valid_and_says_so():
    spec = validate_spec({**OSFT, "training_mode": "infinite", "min_samples_per_checkpoint": 1000, "lr_scheduler": "constant"})
    assert spec.backend_kwargs["training_mode"] == "infinite"
    assert any("infinite" in note for note in spec.notes)


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"beta1": 0.9}, "beta1"),
        ({"adamw_betas": [0.9, 0.95], "beta1": 0.9, "beta2": 0.95}, "adamw_betas"),
        ({"validation_split": 0.1}, "validation_frequency"),
        ({"max_batch_len": 1000, "max_tokens_per_gpu": 1000}, "max_batch_len"),
        ({"is_pretraining": True}, "block_size"),
        ({"pretraining_config": {}}, "pretraining_config"),
    ],
)
def test_instructlab_rules(extra, field):
    assert any(p.startswith(f"`{field}`") for p in problems({**SFT, **extra}))


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"load_in_4bit": True, "load_in_8bit": True}, "load_in_8bit"),
        ({"bf16": True, "fp16": True}, "fp16"),
        ({"task_type": "SEQ_CLS"}, "task_type"),
        ({"r": 4}, "r"),
    ],
)
def test_lora_rules(extra, field):
    assert any(p.startswith(f"`{field}`") for p in problems({**LORA, **extra}))


@pytest.mark.parametrize("document", [OSFT, SFT, LORA])
def test_paths_required_for_a_direct_call_but_not_in_the_pipeline(document):
    unbound = {k: v for k, v in document.items() if k not in PATHS}
    assert {p.split("`")[1] for p in problems(unbound)} == set(PATHS)
    assert validate_spec(unbound, require_paths=False).algorithm == document["algorithm"]


def test_unknown_algorithm_and_backend():
    [problem] = problems({**OSFT, "algorithm": "ostf"})
    assert "did you mean `osft`" in problem
    assert any("backend" in p for p in problems({**OSFT, "backend": "unsloth"}))
    assert validate_spec({**LORA, "backend": "peft"}).backend == "peft"


def test_all_problems_are_reported_together():
    found = problems({**OSFT, "learning_rate": 0, "validaton_split": 0.1, "num_epochs": 1, "max_epochs": 2})
    assert len(found) == 3


SECRET_VALUE = "hf_" + "a1B2c3D4e5" * 4


@pytest.mark.parametrize(
    "extra",
    [
        {"hub_token": SECRET_VALUE},
        {"wandb_api_key": "0123456789abcdef0123456789abcdef01234567"},
        {"mlflow_tracking_uri": "https://alice:s3cr3tpass@mlflow.example.com"},
        {"backend_kwargs": {"hub_token": SECRET_VALUE}},
        {"secrets": {"HF_TOKEN": SECRET_VALUE}},
    ],
)
def test_literal_secret_is_rejected_without_echoing_it(extra):
    found = problems({**LORA, **extra})
    assert any("credential" in p or "reference" in p for p in found)
    assert not any(SECRET_VALUE in p or "s3cr3tpass" in p or "0123456789abcdef" in p for p in found)


def test_secret_references_are_accepted_and_kept():
    spec = validate_spec(
        {
            **LORA,
            "wandb_project": "demo",
            "secrets": {"WANDB_API_KEY": {"secret": "wandb", "key": "api-key"}, "HF_TOKEN": {"env": "HF_TOKEN"}},
        }
    )
    assert spec.to_document()["secrets"] == {
        "HF_TOKEN": {"env": "HF_TOKEN"},
        "WANDB_API_KEY": {"secret": "wandb", "key": "api-key"},
    }


def test_vocabulary_tokens_are_not_secrets():
    assert validate_spec({**LORA, "eos_token": "<|im_end|>", "pad_token": "<pad>"}).backend_kwargs["eos_token"] == "<|im_end|>"


def test_artifact_round_trips():
    spec = validate_spec({**OSFT, "osft": False, "validation_frequency": 10, "validation_split": 0.1, "wandb_project": "p"})
    again = validate_spec(spec.to_document())
    assert again.to_document() == spec.to_document()
    assert spec.to_document()["backend_kwargs"] == {"osft": False, "validation_frequency": 10, "validation_split": 0.1}


def test_nested_backend_kwargs_and_flat_style_mean_the_same():
    flat = validate_spec({**LORA, "eval_strategy": "steps"})
    nested = validate_spec({**LORA, "backend_kwargs": {"eval_strategy": "steps"}})
    assert flat.to_document() == nested.to_document()
    assert any(
        "give it once" in p for p in problems({**LORA, "eval_strategy": "no", "backend_kwargs": {"eval_strategy": "steps"}})
    )


def test_newer_schema_version_is_rejected():
    assert any("schema_version" in p for p in problems({**LORA, "schema_version": 99}))


def test_file_errors_name_file_and_line(tmp_path):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({**OSFT, "validaton_split": 0.1}, indent=2))
    with pytest.raises(KubetuneError) as info:
        load_spec(path)
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "validaton_split" in text)
    assert f"{path}:{line}: `validaton_split`" in str(info.value)
    path.write_text('{\n  "algorithm": "osft",\n  "lr": ,\n}')
    with pytest.raises(KubetuneError) as info:
        load_spec(path)
    assert f"{path}:3:" in str(info.value)


TRAINING_HUB_OSFT_CALL = {
    # every named parameter of training-hub's osft(), as a user would write it, plus forwarded kwargs
    "model_path": "/m", "data_path": "/d.jsonl", "unfreeze_rank_ratio": 0.3, "effective_batch_size": 8,
    "max_tokens_per_gpu": 2048, "max_seq_len": 1024, "learning_rate": 1e-5, "ckpt_output_dir": "/o",
    "data_output_dir": "/tmp/d", "backend": "mini-trainer", "target_patterns": ["q_proj"], "seed": 1,
    "use_liger": False, "use_processed_dataset": False, "unmask_messages": False, "is_pretraining": False,
    "document_column_name": "document", "lr_scheduler": "cosine", "warmup_steps": 10,
    "lr_scheduler_kwargs": {}, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weight_decay": 0.0,
    "checkpoint_at_epoch": True, "save_final_checkpoint": True, "num_epochs": 1, "nproc_per_node": 8,
    "nnodes": 1, "node_rank": 0, "rdzv_id": 1, "rdzv_endpoint": "h:29500", "master_port": 29500,
    "wandb_project": "w", "wandb_entity": "e", "wandb_run_name": "r", "tensorboard_log_dir": "/tb",
    "mlflow_tracking_uri": "http://mlflow:5000", "mlflow_experiment_name": "x", "mlflow_run_name": "y",
    "trust_remote_code": False, "osft_upcast_dtype": "float32", "save_best_val_loss": False,
}  # fmt: skip


def test_training_hub_osft_call_is_a_valid_spec_unchanged():
    spec = validate_spec({"algorithm": "osft", **TRAINING_HUB_OSFT_CALL})
    assert spec.params["target_patterns"] == ["q_proj"] and spec.backend_kwargs == {
        "osft_upcast_dtype": "float32",
        "save_best_val_loss": False,
    }


def test_examples_validate_without_false_positives():
    from pathlib import Path

    for path in sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.json")):
        assert load_spec(path).algorithm


def test_scan_text_names_shapes_and_redact_hides_only_the_secret():
    from kubetune.secrets import redact, scan_text

    text = f"uri=https://alice:pw123456@mlflow.example/x?a=1&token=abc123 hf={SECRET_VALUE}"
    assert scan_text(text) == ["Hugging Face token", "URL with a credential parameter", "URL with credentials"]
    assert redact(text) == "uri=https://<redacted>@mlflow.example/x?a=1&token=<redacted> hf=<redacted>"
    assert scan_text("model ibm-granite/granite-3.3-8b-instruct at rev 0123456789abcdef0123456789abcdef01234567") == []


@pytest.mark.parametrize(
    ("extra", "where"),
    [
        ({"learning_rate": float("inf")}, "`learning_rate`"),
        ({"lr_scheduler_kwargs": {"a": [float("nan")]}}, "`lr_scheduler_kwargs.a[0]`"),
        ({"seed": 2**64}, "`seed`"),
        ({"per_device_eval_batch_size": 0}, "`per_device_eval_batch_size`"),
        ({"report_to": ["wandb", "nope"]}, "`report_to[1]`"),
        ({"lr_scheduler_kwargs": {"x": {1, 2}}}, "`lr_scheduler_kwargs.x`"),
    ],
)
def test_python_documents_get_the_file_checks_too(extra, where):
    assert any(p.startswith(where) for p in problems({**LORA, **extra}))


def test_integral_numbers_are_integers_whatever_their_spelling():
    assert validate_spec({**SFT, "num_epochs": 2.0}).params["num_epochs"] == 2
    assert any(p.startswith("`num_epochs`") for p in problems({**SFT, "num_epochs": 2.5}))
