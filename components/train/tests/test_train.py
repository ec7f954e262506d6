"""The training step binds the pipeline's prepared data into each backend's own configuration."""

import pytest

from kubetune.backends.base import TrainingRun
from kubetune.backends.registry import get_backend
from kubetune.steps.train import bind
from kubetune.validation import validate_spec

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


@pytest.mark.slow
def test_a_killed_lora_run_resumes_from_its_last_checkpoint_in_the_workspace(tmp_path, tiny_model):
    """A real kill (SIGKILL of the training process) after the first checkpoint, then the same step again."""
    import json
    import signal
    import subprocess
    import sys
    import time

    from kubetune.steps.prepare import prepare

    prepare("kubetune://sample-chat", str(tiny_model), tmp_path / "data" / "train", tmp_path / "data" / "val", num_proc=1)
    kwargs = tmp_path / "kwargs.json"
    # unpacked rows, 50 steps: 40 left to be killed in after step 10; 10 loss rows only with those logged before the kill
    kwargs.write_text(json.dumps({"algorithm": "lora_sft", "num_epochs": 1, "max_steps": 50, "micro_batch_size": 4,
                                  "learning_rate": 0.001, "save_steps": 10, "logging_steps": 5, "seed": 0,
                                  "sample_packing": False}))  # fmt: skip
    script = (
        "import sys, json; from kubetune.steps.train import train; from kubetune.validation import load_spec; "
        "r = train(load_spec(sys.argv[1], require_paths=False), *sys.argv[2:6], workspace=sys.argv[6]); "
        "print(json.dumps(r.metrics))"
    )
    args = [sys.executable, "-c", script, str(kwargs), str(tiny_model), str(tmp_path / "data" / "train"), str(tmp_path / "out"),
            str(tmp_path / "data" / "val"), str(tmp_path / "pvc" / "run-1")]  # fmt: skip
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    checkpoint = tmp_path / "pvc" / "run-1" / "checkpoints" / "checkpoint-10" / "trainer_state.json"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert first.returncode == -signal.SIGKILL, "training finished before it could be killed"
    assert not (tmp_path / "out").exists()  # nothing published by the killed step

    second = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    metrics = json.loads(second.stdout.strip().splitlines()[-1])
    assert metrics["resumed_from"].startswith("checkpoint-") and int(metrics["resumed_from"].split("-")[1]) >= 10
    assert metrics["final_train_loss"] > 0 and metrics["logged_train_steps"] >= 10  # the history survives the kill
    published = tmp_path / "out" / "checkpoints"
    assert (published / "final" / "adapter_model.safetensors").is_file()
    assert not list(published.rglob("optimizer.pt"))  # training state stays in the workspace


@pytest.mark.slow
def test_sft_config_kwargs_reach_the_live_trainer(tmp_path, tiny_model):
    """Backend kwargs of TRL's SFTConfig, read back from the trainer's own args while it trains on CPU."""
    from transformers import TrainerCallback

    from kubetune.steps.prepare import prepare

    prepare("kubetune://sample-chat", str(tiny_model), tmp_path / "train", tmp_path / "val", validation_ratio=0.25, num_proc=1)
    seen = {}

    class ReadBack(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            strategy = getattr(args.eval_strategy, "value", args.eval_strategy)
            seen.update(eval_steps=args.eval_steps, eval_strategy=strategy, max_grad_norm=args.max_grad_norm,
                        per_device_eval_batch_size=args.per_device_eval_batch_size, lr=args.learning_rate)  # fmt: skip

    document = {"algorithm": "lora_sft", "max_steps": 4, "learning_rate": 0.003, "micro_batch_size": 8, "max_seq_len": 256,
                "eval_steps": 2, "max_grad_norm": 0.5, "per_device_eval_batch_size": 3}  # fmt: skip
    spec = validate_spec(document, require_paths=False)
    spec = bind(spec, str(tiny_model), tmp_path / "train", tmp_path / "out", tmp_path / "val")
    result = get_backend("lora_sft").train(spec, TrainingRun(tmp_path / "val" / "data.jsonl", callbacks=(ReadBack(),)))
    assert seen == {"eval_steps": 2, "eval_strategy": "steps", "max_grad_norm": 0.5, "per_device_eval_batch_size": 3, "lr": 0.003}
    assert (result.final_model / "adapter_model.safetensors").is_file()


TRACKED = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_EXPERIMENT_NAME",
    "MLFLOW_RUN_NAME",
    "TENSORBOARD_LOGGING_DIR",
    "MLFLOW_ALLOW_FILE_STORE",
)


@pytest.mark.slow
def test_mlflow_and_tensorboard_receive_metrics_from_a_cpu_run(tmp_path, tiny_model, monkeypatch):
    import mlflow
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from kubetune.steps.prepare import prepare

    for name in TRACKED:  # the step sets them for the trainer; the test gives the process back as it was
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps local file stores behind this switch
    prepare("kubetune://sample-chat", str(tiny_model), tmp_path / "train", tmp_path / "val", validation_ratio=0.25, num_proc=1)
    tracking = {"mlflow_tracking_uri": f"file://{tmp_path}/mlruns", "mlflow_experiment_name": "kubetune-ci",
                "mlflow_run_name": "cpu-run", "tensorboard_log_dir": str(tmp_path / "tensorboard")}  # fmt: skip
    document = {
        "algorithm": "lora_sft",
        "max_steps": 6,
        "max_seq_len": 256,  # packed rows of 256 tokens, not 2048: the metrics are the same, the steps 8x cheaper
        "logging_steps": 2,
        "micro_batch_size": 8,
        "learning_rate": 0.003,
        **tracking,
    }
    spec = bind(validate_spec(document, require_paths=False), str(tiny_model), tmp_path / "train", tmp_path / "out")
    get_backend("lora_sft").train(spec)

    client = mlflow.MlflowClient(tracking_uri=tracking["mlflow_tracking_uri"])
    (run,) = client.search_runs([client.get_experiment_by_name("kubetune-ci").experiment_id])
    assert run.info.run_name == "cpu-run"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [2, 4, 6]
    (events,) = (tmp_path / "tensorboard").rglob("events.out.tfevents.*")
    scalars = EventAccumulator(str(events)).Reload()
    assert [e.step for e in scalars.Scalars("train/loss")] == [2, 4, 6]


@pytest.mark.parametrize("algorithm", ["sft", "osft"])
def test_tracking_parameters_reach_the_backends_own_fields(tmp_path, algorithm):
    tracking = {"wandb_project": "kubetune", "wandb_entity": "team", "mlflow_tracking_uri": "http://mlflow.example:5000",
                "mlflow_experiment_name": "chat", "mlflow_run_name": "weekly"}  # fmt: skip
    if algorithm == "sft":
        tracking["tensorboard_log_dir"] = "/workspace/tensorboard"
    bound = bind(spec(algorithm, **tracking), "/models/base", tmp_path / "train", tmp_path / "out")
    _, args = get_backend(algorithm).build(bound)
    assert {name: getattr(args, name) for name in tracking} == tracking


def test_tensorboard_for_osft_is_said_to_be_ignored_not_dropped_silently():
    notes = spec("osft", tensorboard_log_dir="/workspace/tb").notes
    assert notes == ["tensorboard_log_dir is ignored: mini-trainer logs to W&B and MLflow only (wandb_*, mlflow_*)"]


@pytest.mark.slow
def test_sigterm_saves_stops_and_completes_the_step(tmp_path, tiny_model):
    """SIGTERM (a cancelled run, a pre-empted pod, an infinite run being stopped) mid-training: the step saves,
    stops, and finishes normally with its output complete, so export can take the last good checkpoint."""
    import json
    import signal
    import subprocess
    import sys
    import time

    from kubetune.steps.prepare import prepare

    prepare("kubetune://sample-chat", str(tiny_model), tmp_path / "data" / "train", tmp_path / "data" / "val", num_proc=1)
    kwargs = tmp_path / "kwargs.json"
    document = {"algorithm": "lora_sft", "max_steps": 5000, "micro_batch_size": 4, "save_steps": 10, "max_seq_len": 256}
    kwargs.write_text(json.dumps(document))
    script = (
        "import sys, json; from kubetune.steps.train import train; from kubetune.validation import load_spec; "
        "print(json.dumps(train(load_spec(sys.argv[1], require_paths=False), *sys.argv[2:6]).metrics))"
    )
    args = [sys.executable, "-c", script, str(kwargs), str(tiny_model), str(tmp_path / "data" / "train"), str(tmp_path / "out"),
            str(tmp_path / "data" / "val")]  # fmt: skip
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    first = tmp_path / "out" / "checkpoints" / "checkpoint-10" / "trainer_state.json"
    deadline = time.monotonic() + 120
    while not first.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 0
    metrics = json.loads(out.strip().splitlines()[-1])
    assert metrics["stopped_by"] == "SIGTERM" and metrics["logged_train_steps"] < 5000
    assert (tmp_path / "out" / "checkpoints" / "final" / "adapter_model.safetensors").is_file()


def test_sft_and_osft_save_on_demand_and_osft_resumes_its_full_state(tmp_path):
    for algorithm in ("sft", "osft"):
        _, args = get_backend(algorithm).build(bind(spec(algorithm), "/m", tmp_path / "train", tmp_path / "out"))
        assert args.on_demand_checkpointing is True
    import torch

    step = tmp_path / "out" / "checkpoints" / "full_state_checkpoints" / "step_40"
    (step / "distributed").mkdir(parents=True)
    (step / "distributed" / ".metadata").write_bytes(b"dcp")
    torch.save({"step": 40}, step / "training_state.pt")
    (step.parent / "step_50").mkdir()
    (step.parent / "step_50" / "training_state.pt").write_bytes(b"")  # killed while saving: skipped
    _, args = get_backend("osft").build(bind(spec("osft"), "/m", tmp_path / "train", tmp_path / "out"))
    assert args.resume_from_full_state_checkpoint == str(step)
    _, args = get_backend("osft").build(bind(spec("osft", on_demand_checkpointing=False), "/m", tmp_path / "t", tmp_path / "x"))
    assert args.on_demand_checkpointing is False and args.resume_from_full_state_checkpoint is None  # the user's choice wins


def test_lora_options_reach_unsloth_or_are_refused_by_name():
    from peft import LoraConfig

    from kubetune.backends.lora import unsloth_lora_kwargs
    from kubetune.errors import KubetuneError

    config = LoraConfig(
        r=8, lora_alpha=16, target_modules="all-linear", use_rslora=True, modules_to_save=["lm_head"], task_type="CAUSAL_LM"
    )
    options = unsloth_lora_kwargs(config.to_dict())
    assert (options["r"], options["use_rslora"], options["modules_to_save"]) == (8, True, ["lm_head"])
    with pytest.raises(KubetuneError, match='use_dora: is not supported by Unsloth \\(set "backend": "peft"'):
        unsloth_lora_kwargs(LoraConfig(r=8, use_dora=True).to_dict())


def test_quantized_loading_without_cuda_is_a_clear_error_not_a_silent_full_precision_run(tmp_path, tiny_model):
    from kubetune.errors import KubetuneError

    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "data.jsonl").write_text('{"input_ids": [1, 2], "labels": [1, 2], "len": 2}\n')
    document = {"algorithm": "lora_sft", "max_steps": 1, "learning_rate": 0.001, "load_in_4bit": True}
    bound = bind(validate_spec(document, require_paths=False), str(tiny_model), tmp_path / "train", tmp_path / "out")
    with pytest.raises(KubetuneError, match="load_in_4bit: needs a CUDA GPU"):
        get_backend("lora_sft").train(bound)


def test_4bit_settings_reach_bitsandbytes_or_are_refused_by_unsloth_never_dropped(tmp_path, tiny_model, monkeypatch):
    import torch
    from transformers import AutoModelForCausalLM

    from kubetune.backends import lora
    from kubetune.errors import KubetuneError

    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "data.jsonl").write_text('{"input_ids": [1, 2], "labels": [1, 2], "len": 2}\n')
    document = {"algorithm": "lora_sft", "max_steps": 1, "learning_rate": 0.001, "load_in_4bit": True}
    document |= {"bnb_4bit_quant_type": "nf4", "bnb_4bit_compute_dtype": "float16", "bnb_4bit_use_double_quant": True}
    bound = bind(validate_spec(document, require_paths=False), str(tiny_model), tmp_path / "train", tmp_path / "out")
    seen = {}

    def loaded(path, **kwargs):  # stop before bitsandbytes (CUDA only) would load the weights
        seen.update(kwargs["quantization_config"].to_dict())
        raise RuntimeError("loaded")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", loaded)
    with pytest.raises(RuntimeError, match="loaded"):  # the loading step alone: no trainer built on a faked CUDA
        get_backend("lora_sft")._load(bound.model_copy(update={"backend": "peft"}), None)
    assert (seen["bnb_4bit_quant_type"], seen["bnb_4bit_compute_dtype"], seen["bnb_4bit_use_double_quant"]) == (
        "nf4",
        "float16",
        True,
    )
    monkeypatch.setattr(lora, "unsloth_usable", lambda: True)
    with pytest.raises(KubetuneError, match="bnb_4bit_compute_dtype: is not honoured by Unsloth"):
        get_backend("lora_sft")._load(bound, None)
