"""``lora_sft``: LoRA through Unsloth + TRL on CUDA, through PEFT + TRL where Unsloth cannot run."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
from pathlib import Path
from typing import Any

from kubetune.backends.base import Backend, TrainingRun, TrainResult
from kubetune.backends.cpu_mode import environment
from kubetune.backends.metrics import BackendSeries, Point, finite
from kubetune.backends.needs import DEEPSPEED, LIGER
from kubetune.backends.tracking import from_env, trackers, tracking_env, trl_env
from kubetune.checkpoints import Position, resume_checkpoint, step_position
from kubetune.contract.catalog import Catalog
from kubetune.contract.params import REQUIRED, LoRASFTParams
from kubetune.data import tokenized_file
from kubetune.data.tokenize import read_jsonl, tokenize_samples
from kubetune.errors import KubetuneError, Problem

log = logging.getLogger(__name__)

SFT_CONFIG = "trl.SFTConfig"
LORA_CONFIG = "peft.LoraConfig"
# SFTConfig fields whose checks depend on the machine (a GPU, DeepSpeed): not judged by CPU validation
GPU_FIELDS = (
    "use_cpu", "bf16", "fp16", "tf32", "half_precision_backend", "bf16_full_eval", "fp16_full_eval", "fp16_opt_level",
    "deepspeed", "fsdp", "fsdp_config", "ddp_backend",
)  # fmt: skip


def unsloth_usable() -> bool:
    """Unsloth needs CUDA; it is imported only when a GPU is present."""
    import importlib.util

    import torch

    return torch.cuda.is_available() and importlib.util.find_spec("unsloth") is not None


def uses_unsloth(spec) -> bool:
    """``unsloth`` (the default, Training Hub's only name) trains with Unsloth where it is usable; ``peft`` and
    ``trl`` (kubetune's names for the PEFT + TRL path) never do."""
    return spec.backend not in ("peft", "trl") and unsloth_usable()


class LoRASFT(Backend):
    algorithm = "lora_sft"
    params_model = LoRASFTParams
    required_params = REQUIRED["lora_sft"]
    name = "unsloth"
    installs = ("trl", "lora")
    aliases = ("peft", "trl")
    catalog_name = "trl"
    needs = {"use_liger_kernel": LIGER, "deepspeed": DEEPSPEED}
    renames = {
        "output_dir": "ckpt_output_dir",
        "num_train_epochs": "num_epochs",
        "per_device_train_batch_size": "micro_batch_size",
        "lr_scheduler_type": "lr_scheduler",
        "max_length": "max_seq_len",
        "r": "lora_r",
        "packing": "sample_packing",
    }
    managed = {
        "callbacks": "Python callbacks cannot travel in a JSON artifact",
        "peft_type": "kubetune trains LoRA adapters",
        "task_type": "kubetune trains causal language models (CAUSAL_LM)",
        "base_model_name_or_path": "set model_path",
    }

    def check(self, params: dict[str, Any], kwargs: dict[str, Any], catalog: Catalog, pipeline: bool = False) -> list[Problem]:
        problems = []
        if params.get("load_in_4bit") and params.get("load_in_8bit"):
            problems.append(Problem("load_in_8bit", "and load_in_4bit exclude each other; give one"))
        if params.get("bf16") and params.get("fp16"):
            problems.append(Problem("fp16", "and bf16 exclude each other; give one"))
        if kwargs.get("eval_strategy", "no") != "no" and kwargs.get("do_eval") is False:
            problems.append(Problem("do_eval", f"is false but eval_strategy is {kwargs['eval_strategy']!r}"))
        # Unsloth's options for vision-language models (Training Hub passes them to those only): kubetune trains
        # the language layers of a causal LM on text, so only the values that say so can be honoured
        if params.get("finetune_vision_layers"):
            problems.append(Problem("finetune_vision_layers", "is not supported: kubetune trains text models, no vision layers"))
        if params.get("finetune_language_layers") is False:
            problems.append(Problem("finetune_language_layers", "cannot be false: kubetune's LoRA trains the language layers"))
        return problems

    def bind_data(self, spec, train_data: Path, output_dir: Path, validation_data: Path | None) -> dict[str, Any]:
        """Training Hub's eval set (``eval_data_path``) is, in the pipeline, our prepared validation split."""
        return {"eval_data_path": str(eval_split(validation_data))} if spec.params.get("eval_data_path") else {}

    def validation_configs(self, spec) -> None:
        """TRL's ``SFTConfig`` and PEFT's ``LoraConfig`` built on CPU, always: every lora_sft spec reaches them
        (curated parameters such as lr_scheduler too); importing them takes seconds. Settings that depend on
        the GPU are left out (their fixed lists, fsdp's words, are checked by the catalogue)."""
        import importlib.util

        if importlib.util.find_spec("trl") is None or importlib.util.find_spec("peft") is None:
            return
        from peft import LoraConfig
        from trl import SFTConfig

        args = self.sft_config_kwargs(spec, has_eval=True, use_cpu=True)
        SFTConfig(**{k: v for k, v in args.items() if k not in GPU_FIELDS}, use_cpu=True)
        LoraConfig(**self.lora_config_kwargs(spec))

    def sft_config_kwargs(self, spec, has_eval: bool, use_cpu: bool) -> dict[str, Any]:
        """The exact keyword arguments TRL's ``SFTConfig`` receives."""
        p = spec.params
        world = int(os.environ.get("WORLD_SIZE", "1"))
        accum = p.get("gradient_accumulation_steps", 1)
        # Training Hub 0.11.2 (algorithms/lora.py _build_training_args): effective_batch_size, when given, sets the
        # micro-batch; else micro_batch_size (2). Its defaults below (tests/contract/test_hub_defaults.py).
        eff = p.get("effective_batch_size")
        micro = max(1, eff // (accum * world)) if eff else p.get("micro_batch_size", 2)
        args: dict[str, Any] = {
            "output_dir": p["ckpt_output_dir"],
            "num_train_epochs": p.get("num_epochs", 3),
            "per_device_train_batch_size": micro,
            "gradient_accumulation_steps": accum,
            "learning_rate": p.get("learning_rate", 2e-4),
            "weight_decay": 0.01,
            "max_grad_norm": 0.3,
            "warmup_steps": p.get("warmup_steps", 10),
            "lr_scheduler_type": p.get("lr_scheduler", "linear"),
            "max_length": p.get("max_seq_len", 2048),
            "packing": p.get("sample_packing", True),
            "packing_strategy": "bfd",
            "logging_steps": p.get("logging_steps", 1),
            "save_steps": 500,
            "save_total_limit": 3,
            "dataloader_pin_memory": False,
            "remove_unused_columns": False,
            "ddp_find_unused_parameters": False,
            "report_to": trackers(p),
            "use_cpu": use_cpu,
            "bf16": p.get("bf16", not use_cpu),
        }
        for name in ("seed", "fp16", "tf32", "save_steps", "eval_steps", "save_total_limit"):
            if p.get(name) is not None:
                args[name] = p[name]
        if p.get("wandb_run_name") or p.get("mlflow_run_name"):
            args["run_name"] = p.get("wandb_run_name") or p.get("mlflow_run_name")
        if p.get("eval_data_path"):  # Training Hub: an eval set means evaluating every eval_steps, 500 unless given
            args["eval_steps"] = p.get("eval_steps", 500)
        args["per_device_eval_batch_size"] = micro  # Training Hub's default: the train micro-batch size
        # enable_jit_checkpoint is Training Hub's (our stop_on_signal), not transformers' own SIGTERM handler
        # (and effective_batch_size, when given, decides the micro-batch over micro_batch_size, as in Training Hub)
        skip = {"enable_jit_checkpoint", "per_device_train_batch_size"} if eff else {"enable_jit_checkpoint"}
        args.update({k: v for k, v in self.by_class(spec).get(SFT_CONFIG, {}).items() if k not in skip})
        # Training Hub evaluates when given eval_data_path; asking for eval_steps means "evaluate" (on our split) too.
        if ((has_eval and "eval_steps" in args) or p.get("eval_data_path")) and "eval_strategy" not in spec.backend_kwargs:
            args["eval_strategy"] = "steps"
        if not has_eval and args.get("eval_strategy", "no") != "no":
            raise ValueError(f"eval_strategy={args['eval_strategy']!r} needs validation data, and none was given")
        args.setdefault("eval_steps", 500)  # Training Hub always passes it (evaluation itself stays as decided above)
        return args

    def lora_config_kwargs(self, spec) -> dict[str, Any]:
        p = spec.params
        args = {
            "r": p.get("lora_r", 16),
            "lora_alpha": p.get("lora_alpha", 32),
            "lora_dropout": p.get("lora_dropout", 0.0),
            "target_modules": p.get("target_modules") or "all-linear",
            "task_type": "CAUSAL_LM",
        }
        args.update(self.by_class(spec).get(LORA_CONFIG, {}))
        return args

    def build(self, spec, run: TrainingRun | None = None):
        """TRL's ``SFTConfig`` and PEFT's ``LoraConfig``; TRL evaluates during training only where ``run`` has
        validation data."""
        import torch
        from peft import LoraConfig
        from trl import SFTConfig

        has_eval = run is not None and run.validation_data is not None
        use_cpu = not torch.cuda.is_available()
        return SFTConfig(**self.sft_config_kwargs(spec, has_eval, use_cpu)), LoraConfig(**self.lora_config_kwargs(spec))

    def _load(self, spec, lora_config):
        p = spec.params
        if uses_unsloth(spec):
            if chosen := sorted(bnb_options(p)):  # Unsloth picks its own 4-bit settings: never drop ours silently
                raise KubetuneError(
                    [Problem(chosen[0], "is not honoured by Unsloth (it chooses its own 4-bit settings); set backend: peft")],
                    "cannot train",
                )
            from unsloth import FastLanguageModel  # GPU only, imported lazily

            options = unsloth_lora_kwargs(lora_config.to_dict())  # before loading: a refusal costs nothing
            model, tokenizer = FastLanguageModel.from_pretrained(
                model_name=p["model_path"],
                max_seq_length=p.get("max_seq_len") or 2048,
                dtype=None,
                load_in_4bit=bool(p.get("load_in_4bit")),
                load_in_8bit=bool(p.get("load_in_8bit")),
                trust_remote_code=bool(p.get("trust_remote_code")),
            )
            model = FastLanguageModel.get_peft_model(
                model, use_gradient_checkpointing="unsloth", random_state=p.get("seed", 3407), **options
            )
            return model, tokenizer, None
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if spec.backend == "unsloth":
            log.info("Unsloth needs CUDA; training lora_sft with PEFT + TRL instead")
        quantized = {}
        if p.get("load_in_4bit") or p.get("load_in_8bit"):
            if not torch.cuda.is_available():
                field = "load_in_4bit" if p.get("load_in_4bit") else "load_in_8bit"
                raise KubetuneError([Problem(field, "needs a CUDA GPU (bitsandbytes); remove it to train in full precision")])
            from transformers import BitsAndBytesConfig

            quantized["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=bool(p.get("load_in_4bit")), load_in_8bit=bool(p.get("load_in_8bit")), **bnb_options(p)
            )
        remote = bool(p.get("trust_remote_code"))
        tokenizer = AutoTokenizer.from_pretrained(p["model_path"], trust_remote_code=remote)
        model = AutoModelForCausalLM.from_pretrained(p["model_path"], trust_remote_code=remote, **quantized)
        if quantized:
            from peft import prepare_model_for_kbit_training

            model = prepare_model_for_kbit_training(model)
        return model, tokenizer, lora_config

    def train(self, spec, run: TrainingRun | None = None) -> TrainResult:
        """TRL's ``SFTTrainer`` in this process; it evaluates during training on ``run``'s validation split when
        eval_strategy/eval_steps ask, and ``run``'s callbacks observe the loop."""
        if unset := from_env(spec.params):  # tracking parameters left unset: from the environment, as Training Hub
            spec = spec.with_params(**unset)
        run = run or TrainingRun()
        if run.validation_data is not None:
            run = TrainingRun(tokenized_file(run.validation_data), run.callbacks)
        p = spec.params
        sft_config, lora_config = self.build(spec, run)
        with environment({**trl_env(p), **tracking_env(p, sft_config.output_dir, needs_project=False)}):
            try:
                return self._train(spec, sft_config, lora_config, run.validation_data, list(run.callbacks) or None)
            finally:
                finish_wandb_run(sft_config.report_to)

    def checkpoint_position(self, path: Path) -> Position | None:
        """TRL's ``checkpoint-N``: step N."""
        return step_position(path)

    def read_metrics(self, output_dir: Path) -> BackendSeries | None:
        """TRL's ``log_history``: from the ``trainer_state.json`` saved at the end of training (the whole history),
        else from the newest readable ``checkpoint-N``'s (a damaged newest one: the one before it)."""
        root = Path(output_dir)
        finished = sorted(root.rglob("trainer_state.json"), key=lambda p: len(p.parts))
        whole = finished[0] if finished and not finished[0].parent.name.startswith("checkpoint-") else None
        if whole and (series := _read_trl_or_none(whole)) is not None:
            return series
        states = [
            p
            for p in root.rglob("checkpoint-*/trainer_state.json")
            if p.parent.name.split("-")[-1].isdigit() and "incomplete" not in p.relative_to(root).parts
        ]
        for state in sorted(states, key=lambda p: int(p.parent.name.split("-")[-1]), reverse=True):
            if (series := _read_trl_or_none(state)) is not None:
                return series
        return None

    def _train(self, spec, sft_config, lora_config, validation_data, callbacks) -> TrainResult:
        from trl import SFTTrainer

        p = spec.params
        model, tokenizer, peft_config = self._load(spec, lora_config)
        out = Path(sft_config.output_dir)
        train_set = _dataset(p["data_path"], tokenizer, p.get("max_seq_len"), out)
        eval_set = _dataset(validation_data, tokenizer, p.get("max_seq_len"), out) if validation_data else None
        trainer = SFTTrainer(
            model=model,
            args=sft_config,
            train_dataset=train_set,
            eval_dataset=eval_set if eval_set is not None and len(eval_set) else None,
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=callbacks,
        )
        # the newest complete checkpoint; incomplete ones (a kill mid-save) are noted, and set aside by rank 0
        resume = resume_checkpoint(out, say=_say, own=os.environ.get("RANK", "0") == "0") if out.is_dir() else None
        if resume:
            _say(f"[kubetune] resuming from {resume.name}")
        stop = stop_on_signal()
        jit = p.get("enable_jit_checkpoint", True)  # Training Hub's name for the save on SIGTERM (off: no handler)
        if jit:
            trainer.add_callback(stop)
        with stop.listening() if jit else contextlib.nullcontext():
            trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        trainer.save_state()  # trainer_state.json with the whole log history, beside the checkpoints
        final = out / "final"
        trainer.save_model(str(final))  # the main process writes; the others wait
        if trainer.is_world_process_zero():
            tokenizer.save_pretrained(str(final))
        checkpoints = sorted(out.glob("checkpoint-*"), key=lambda c: int(c.name.split("-")[-1]))
        metrics = {
            "train_samples": len(train_set),
            "resumed_from": Path(resume).name if resume else "",
            "stopped_by": stop.signal,
        }
        return TrainResult(out, final, checkpoints, metrics)


def read_trl(path: Path) -> BackendSeries:
    """TRL's ``trainer_state.json``: ``loss`` and ``eval_loss`` entries of its ``log_history``, by step."""
    series = BackendSeries("trl")
    for entry in json.loads(path.read_text(encoding="utf-8")).get("log_history", []):
        if finite(entry.get("loss")):
            series.train.append(Point(float(entry["loss"]), entry.get("step")))
        if finite(entry.get("eval_loss")):
            series.validation.append(Point(float(entry["eval_loss"]), entry.get("step")))
    return series


def _read_trl_or_none(path: Path) -> BackendSeries | None:
    try:
        return read_trl(path)
    except (OSError, ValueError, UnicodeDecodeError, AttributeError, TypeError):
        return None


def eval_split(validation_data: str | Path | None) -> Path:
    """The prepared validation split that ``eval_data_path`` names in the pipeline; a missing or empty one is refused."""
    found = tokenized_file(validation_data) if validation_data else None
    if found is None or not found.is_file() or found.stat().st_size == 0:
        raise KubetuneError(
            [
                Problem(
                    "eval_data_path",
                    "asks TRL to evaluate on validation data, and the pipeline prepared none",
                    "give the pipeline validation_uri or a validation_ratio above 0, or remove eval_data_path",
                )
            ],
            "cannot train",
        )
    return found


def finish_wandb_run(report_to) -> None:
    """End the W&B run TRL started (it leaves it open until the process exits): its data is complete when the step
    returns, and a later run in this process is a run of its own."""
    if "wandb" in (report_to or []):
        import wandb

        if wandb.run is not None:
            wandb.finish()


def _say(line: str) -> None:
    print(line, flush=True)


def stop_on_signal():
    """A TrainerCallback that, after SIGTERM (run cancelled, pod pre-empted, infinite training stopped),
    finishes the current step, saves a checkpoint and stops training; ``.signal`` says what was received.
    Its ``listening()`` context installs the handler. Built here so importing this module stays cheap."""
    from transformers import TrainerCallback

    class StopOnSignal(TrainerCallback):
        signal = ""

        @contextlib.contextmanager
        def listening(self):
            def handler(signum, frame):
                self.signal = signal.Signals(signum).name

            previous = signal.signal(signal.SIGTERM, handler)
            try:
                yield self
            finally:
                signal.signal(signal.SIGTERM, previous)

        def on_step_end(self, args, state, control, **kwargs):
            if self.signal:
                control.should_save = True
                control.should_training_stop = True
            return control

    return StopOnSignal()


def _dataset(path: str | Path, tokenizer, max_seq_len: int | None, output_dir: Path):
    """TRL's pre-tokenized dataset: prepared data is memory-mapped as it is; raw chat records are tokenized here."""
    from datasets import Dataset

    first = next(read_jsonl(path), {})
    if "input_ids" in first:
        # one cache per process: torchrun ranks of a multi-node job share the output directory
        cache = output_dir / ".datasets-cache" / f"rank{os.environ.get('RANK', '0')}"
        dataset = Dataset.from_json(str(path), cache_dir=str(cache))
        if max_seq_len:
            dataset = dataset.filter(lambda row: row["len"] <= max_seq_len) if "len" in dataset.column_names else dataset
        return dataset.select_columns(["input_ids", "labels"])
    rows, _ = tokenize_samples(tokenizer, read_jsonl(path), max_seq_len)
    return Dataset.from_list(rows).select_columns(["input_ids", "labels"])


# LoraConfig fields that Unsloth's FastLanguageModel.get_peft_model takes (it drops any other without a word)
UNSLOTH_LORA_FIELDS = (
    "r", "lora_alpha", "lora_dropout", "target_modules", "bias", "layers_to_transform", "layers_pattern",
    "use_rslora", "modules_to_save", "init_lora_weights", "loftq_config",
)  # fmt: skip


def bnb_options(params: dict[str, Any]) -> dict[str, Any]:
    """The spec's bitsandbytes 4-bit settings, as ``BitsAndBytesConfig`` takes them."""
    return {k: params[k] for k in ("bnb_4bit_quant_type", "bnb_4bit_compute_dtype", "bnb_4bit_use_double_quant") if k in params}


def unsloth_lora_kwargs(lora: dict[str, Any]) -> dict[str, Any]:
    """The LoRA options Unsloth receives; a LoRA option set away from PEFT's default that Unsloth would
    drop is an error naming it, instead of a silent drop."""
    from peft import LoraConfig

    defaults = LoraConfig().to_dict()
    ignored = {"peft_type", "task_type", "base_model_name_or_path", "revision", "inference_mode", "auto_mapping"}
    dropped = [k for k, v in lora.items() if k not in UNSLOTH_LORA_FIELDS and k not in ignored and v != defaults.get(k)]
    if dropped:
        raise KubetuneError(
            [Problem(k, "is not supported by Unsloth", 'set "backend": "peft" to train with it') for k in sorted(dropped)],
            "invalid LoRA options for Unsloth",
        )
    options = {k: lora[k] for k in UNSLOTH_LORA_FIELDS if k in lora}
    if isinstance(options.get("target_modules"), set):
        options["target_modules"] = sorted(options["target_modules"])
    return options
