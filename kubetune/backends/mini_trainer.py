"""``osft`` through mini-trainer (PyPI ``rhai-innovation-mini-trainer``, import name ``mini_trainer``)."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path
from typing import Any

from kubetune.backends.base import TrainingRun, TrainResult
from kubetune.backends.cpu_mode import environment
from kubetune.backends.metrics import BackendSeries, Point, finite, json_rows, latest_run, metrics_file
from kubetune.backends.needs import LIGER
from kubetune.backends.resume import require_every_sample, resumable_mini_trainer
from kubetune.backends.rules import TORCHRUN_NAMES, effective, pretraining_problems, torchrun_kwargs
from kubetune.backends.torchrun import TorchrunBackend, flash_attn_missing, say
from kubetune.backends.tracking import from_env, offline_key, tracking_env
from kubetune.checkpoints import latest_full_state
from kubetune.contract.catalog import Catalog
from kubetune.contract.params import REQUIRED, OSFTParams
from kubetune.data import tokenized_file
from kubetune.errors import Problem

# mini-trainer fields that ask for in-training validation
VALIDATION_TRIGGERS = ("validation_frequency", "validate_at_epoch", "min_samples_per_validation", "validate_at_final")


class MiniTrainerOSFT(TorchrunBackend):
    algorithm = "osft"
    params_model = OSFTParams
    required_params = REQUIRED["osft"]
    name = "mini-trainer"
    installs = ("mini_trainer", "osft")
    catalog_name = "mini-trainer"
    config_source = ("mini_trainer", "training_types")
    launcher = "mini_trainer"
    needs = {"use_liger": LIGER}
    renames = {
        "model_name_or_path": "model_path",
        "batch_size": "effective_batch_size",
        "output_dir": "ckpt_output_dir",
        "max_epochs": "num_epochs",
        "osft_unfreeze_rank_ratio": "unfreeze_rank_ratio",
        "osft_target_patterns": "target_patterns",
        "num_warmup_steps": "warmup_steps",
        "use_liger_kernels": "use_liger",
    }
    managed = {
        "callbacks": "Python callbacks cannot travel in a JSON artifact",
        "pretraining_config": "set is_pretraining and block_size instead",
    }

    def check(self, params: dict[str, Any], kwargs: dict[str, Any], catalog: Catalog, pipeline: bool = False) -> list[Problem]:
        problems = []
        if kwargs.get("osft", True) and params.get("unfreeze_rank_ratio") is None:
            problems.append(Problem("unfreeze_rank_ratio", 'is required for osft (or set "osft": false)'))
        mode = effective(kwargs, catalog, "training_mode", "epoch")
        for needed_mode, field in (("step", "max_steps"), ("token", "max_tokens")):
            if mode == needed_mode and not (effective(kwargs, catalog, field, 0) or 0) > 0:
                problems.append(Problem(field, f'must be > 0 when training_mode is "{needed_mode}"'))
        problems += infinite_scheduler_problems(mode, params, kwargs, catalog)
        split = effective(kwargs, catalog, "validation_split", 0.0)
        if isinstance(split, (int, float)) and not 0.0 <= split < 1.0:
            problems.append(Problem("validation_split", "must be in [0, 1)"))
        has_path = kwargs.get("validation_data_path") is not None
        if has_path and isinstance(split, (int, float)) and split > 0:
            problems.append(Problem("validation_data_path", "and validation_split exclude each other; give one"))
        min_samples = kwargs.get("min_samples_per_validation")
        if isinstance(min_samples, int) and min_samples < 1:
            problems.append(Problem("min_samples_per_validation", "must be a positive integer when set"))
        validating = has_path or (isinstance(split, (int, float)) and split > 0)
        triggers = VALIDATION_TRIGGERS
        # in the pipeline, asking for validation binds the prepared validation split (components/train)
        bound_by_pipeline = pipeline and not validating and any(kwargs.get(t) for t in (*triggers, "save_best_val_loss"))
        if validating and not any(effective(kwargs, catalog, t) for t in triggers):
            problems.append(
                Problem(
                    "validation_split" if not has_path else "validation_data_path",
                    "validation data is given but no validation trigger is set",
                    "set one of " + ", ".join(triggers),
                )
            )
        if kwargs.get("save_best_val_loss") and not (validating or bound_by_pipeline):
            problems.append(Problem("save_best_val_loss", "needs validation data (validation_split or validation_data_path)"))
        if params.get("rdzv_endpoint") and params.get("master_addr"):
            problems.append(Problem("master_addr", "and rdzv_endpoint exclude each other; give one"))
        if params.get("is_pretraining") and params.get("unmask_messages"):
            problems.append(Problem("unmask_messages", "cannot be combined with is_pretraining"))
        return problems + pretraining_problems(params) + scheduler_kwargs_problems(params.get("lr_scheduler_kwargs"))

    def bind_data(self, spec, train_data: Path, output_dir: Path, validation_data: Path | None) -> dict[str, Any]:
        """A restarted step resumes from its newest full state (the incomplete ones a kill left are set aside, one line
        each, when the backend starts); asking for validation without data of its own validates on our split."""
        bound = super().bind_data(spec, train_data, output_dir, validation_data)
        kwargs = spec.backend_kwargs
        if not kwargs.get("resume_from_full_state_checkpoint"):
            bound["resume_from_full_state_checkpoint"] = latest_full_state(output_dir / "checkpoints", say=lambda _line: None)
        asks = any(kwargs.get(name) for name in (*VALIDATION_TRIGGERS, "save_best_val_loss"))
        own_split = kwargs.get("validation_split") or kwargs.get("validation_data_path")
        if validation_data and asks and not own_split:
            bound["validation_data_path"] = str(tokenized_file(validation_data))
        return bound

    def notes(self, params: dict[str, Any], kwargs: dict[str, Any]) -> list[str]:
        notes = []
        if params.get("tensorboard_log_dir"):
            notes.append("tensorboard_log_dir is ignored: mini-trainer logs to W&B and MLflow only (wandb_*, mlflow_*)")
        if kwargs.get("training_mode") == "infinite":
            notes += [
                'training_mode is "infinite": training runs until the run is stopped; checkpoints come every '
                f"{kwargs.get('min_samples_per_checkpoint') or 'epoch-end/none'} samples "
                "(set min_samples_per_checkpoint to keep them coming)"
            ]
        return notes

    def training_kwargs(self, spec) -> dict[str, Any]:
        """The exact keyword arguments mini-trainer's ``TrainingArgs`` receives."""
        args = self.by_class(spec).get("mini_trainer.TrainingArgs", {})
        args.setdefault("osft", True)  # Training Hub's default: osft() means OSFT unless told otherwise
        return args

    def configs(self, spec, types):
        """mini-trainer's ``TorchrunArgs`` and ``TrainingArgs`` for ``spec``, from its ``training_types`` module."""
        args = self.training_kwargs(spec)
        args["training_mode"] = types.TrainingMode(args.get("training_mode", "epoch"))
        if spec.params.get("is_pretraining"):
            args["pretraining_config"] = types.PretrainingConfig(block_size=spec.params["block_size"])
        return types.TorchrunArgs(**torchrun_kwargs(spec.params, TORCHRUN_NAMES)), types.TrainingArgs(**args)

    def output_dir(self, train_args) -> Path:
        return Path(train_args.output_dir)

    def train(self, spec, run: TrainingRun | None = None) -> TrainResult:
        """mini-trainer's own ``run_training``, made to honour what it would drop: the AdamW settings (its
        launcher never forwards them to ``train.py``), validation losses of every trigger (written by our
        callback), the SIGTERM save (its launcher would write another trigger file than the one its workers
        poll), and sdpa attention where flash-attn is missing (mini-trainer would stop with an ImportError).

        Metrics: ``resumed_from`` (the full-state checkpoint this run continued, or ""), ``stopped_by`` (the
        signal that stopped it, or "") and ``full_state_saved`` (the full-state checkpoint that signal saved)."""
        from mini_trainer import api_train, full_state_checkpoint

        from kubetune.backends.mini_trainer_validation import VALIDATION_LOG_ENV, KubetuneValidationLog

        if unset := from_env(spec.params):  # tracking parameters left unset: from the environment, as Training Hub
            spec = spec.with_params(**unset)
        torch_args, train_args = self.launch(spec)
        train_args.callbacks = [KubetuneValidationLog()]
        out = Path(train_args.output_dir)
        resume = train_args.resume_from_full_state_checkpoint
        train_args.resume_from_full_state_checkpoint = resumable_mini_trainer(resume, out, say)
        env = {VALIDATION_LOG_ENV: str(out / VALIDATION_LOG), **tracking_env(spec.params, out), **offline_key(spec.params)}
        if flash_attn_missing():
            say("[kubetune] flash-attn is not installed: mini-trainer uses sdpa attention (TESTING=true)")
            env["TESTING"] = "true"
        before = set(full_states(out))
        signals: list[str] = []
        with (
            environment(env),
            forwarded(api_train, optimizer_arguments(self.training_kwargs(spec))),
            launcher_trigger(full_state_checkpoint, signals),
        ):
            result = self.train_launched(torch_args, train_args)
        saved = sorted(set(full_states(out)) - before, key=lambda p: int(p.name.removeprefix("step_")))
        resumed = train_args.resume_from_full_state_checkpoint
        result.metrics.update(
            resumed_from=_under(Path(resumed), out) if resumed else "",
            stopped_by=signals[0] if signals else "",
            full_state_saved=_under(saved[-1], out) if saved else "",
        )
        if not signals and train_args.training_mode.value == "epoch":
            require_every_sample(result.final_model, Path(train_args.data_path), train_args.max_epochs, train_args)
        return result

    def read_metrics(self, output_dir: Path) -> BackendSeries | None:
        found = metrics_file(output_dir, METRICS_FILE)
        return read_mini_trainer(found) if found else None


METRICS_FILE = "training_metrics_0.jsonl"  # rank 0's: loss, total_samples_accumulated, val_loss


def read_mini_trainer(path: Path) -> BackendSeries:
    """mini-trainer's ``training_metrics_{rank}.jsonl``, with the validation losses our callback wrote beside it
    (``kubetune_validation_{rank}.jsonl``: every trigger's, where mini-trainer's file holds only
    ``validation_frequency`` / ``min_samples_per_validation`` ones; a fresh ``val_loss`` there is a row with
    ``val_num_loss_counted_tokens``, since every row repeats the last one). One point per step: the newest row
    wins, and a run that started again from scratch in the same folder replaces the rows from its first step on."""
    train, fresh = [], []
    for row in json_rows(path):
        step, samples = row.get("step"), row.get("total_samples_accumulated")
        if finite(row.get("loss")):
            train.append(Point(float(row["loss"]), step, samples))
        if "val_num_loss_counted_tokens" in row and finite(row.get("val_loss")):
            fresh.append(Point(float(row["val_loss"]), step, samples))
    logged = path.with_name(path.name.replace("training_metrics_", "kubetune_validation_", 1))
    ours = [
        Point(float(row["val_loss"]), row.get("step"), row.get("total_samples_accumulated"))
        for row in (json_rows(logged) if logged.is_file() else [])
        if finite(row.get("val_loss"))
    ]
    validation = {p.step: p for p in latest_run(fresh)} | {p.step: p for p in latest_run(ours)}
    ordered = sorted(validation.values(), key=lambda p: (p.step is None, p.step or 0))
    return BackendSeries("mini-trainer", latest_run(train), ordered)


VALIDATION_LOG = "kubetune_validation_0.jsonl"
# TrainingArgs fields mini-trainer's run_training (0.9.0) never passes to train.py, and train.py's options for them
UNFORWARDED = {"beta1": "--beta1", "beta2": "--beta2", "eps": "--eps", "weight_decay": "--weight-decay"}


def optimizer_arguments(training_kwargs: dict[str, Any]) -> list[str]:
    """``train.py`` options for the AdamW settings the spec gives (mini-trainer's own defaults otherwise)."""
    return [f"{option}={training_kwargs[name]}" for name, option in UNFORWARDED.items() if name in training_kwargs]


@contextlib.contextmanager
def forwarded(api_train, arguments: list[str]):
    """mini-trainer's launcher with ``arguments`` appended to the torchrun command it builds."""
    real = api_train.StreamablePopen

    class WithArguments(real):
        def __init__(self, log_file, command):
            super().__init__(log_file, [*command, *arguments])

    api_train.StreamablePopen = WithArguments
    try:
        yield
    finally:
        api_train.StreamablePopen = real


@contextlib.contextmanager
def launcher_trigger(module, signals: list[str]):
    """mini-trainer's launcher-side signal handler, writing the trigger file its workers poll.

    mini-trainer 0.9 fixes that file's name (``/dev/shm/$CHECKPOINT_TRIGGER_FILENAME``) when ``mini_trainer`` is
    first imported: in our step that is before the launch sets a name of its own (``launch_env``), so its launcher
    would write ``/dev/shm/checkpoint_requested`` while the workers poll the launch's file, and a SIGTERM would
    save nothing. Here the launcher takes the name at launch time; ``signals`` receives each signal's name."""
    real = module.FullStateCheckpointer

    class AtLaunch(real):
        def __init__(self, checkpoint_dir, rank, world_size, trigger_path=None):
            name = os.environ.get("CHECKPOINT_TRIGGER_FILENAME", "checkpoint_requested")
            super().__init__(checkpoint_dir, rank, world_size, trigger_path or str(TRIGGER_DIR / name))

        def _handle_signal(self, signum, frame):
            signals.append(signal.Signals(signum).name)
            super()._handle_signal(signum, frame)

    module.FullStateCheckpointer = AtLaunch
    try:
        yield
    finally:
        module.FullStateCheckpointer = real


TRIGGER_DIR = Path("/dev/shm")  # where mini-trainer's trigger files live


def full_states(output_dir: Path) -> list[Path]:
    """mini-trainer's ``full_state_checkpoints/step_N`` folders under ``output_dir``, complete or not."""
    folder = output_dir / "full_state_checkpoints"
    return [d for d in folder.glob("step_*") if d.is_dir() and d.name.removeprefix("step_").isdigit()]


def _under(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


# transformers' schedulers that need no number of training steps (``get_scheduler``); wsd needs num_stable_steps then
STEPLESS_SCHEDULERS = ("constant", "constant_with_warmup", "inverse_sqrt", "reduce_lr_on_plateau", "greedy")


def infinite_scheduler_problems(mode: Any, params: dict[str, Any], kwargs: dict[str, Any], catalog: Catalog) -> list[Problem]:
    """``infinite`` training has no number of steps: mini-trainer would stop at start-up with the scheduler's error."""
    if mode != "infinite":
        return []
    scheduler = params.get("lr_scheduler") or effective(kwargs, catalog, "lr_scheduler", "cosine")
    stable = isinstance(params.get("lr_scheduler_kwargs"), dict) and "num_stable_steps" in params["lr_scheduler_kwargs"]
    if scheduler in STEPLESS_SCHEDULERS or (scheduler == "warmup_stable_decay" and stable):
        return []
    return [
        Problem(
            "lr_scheduler",
            f'"{scheduler}" needs the number of training steps, which training_mode "infinite" does not have',
            "use one of " + ", ".join(STEPLESS_SCHEDULERS) + " (or warmup_stable_decay with num_stable_steps)",
        )
    ]


def scheduler_kwargs_problems(value: Any) -> list[Problem]:
    """``lr_scheduler_kwargs`` travels to mini-trainer's command line as JSON: an object of plain values.
    Which names the chosen scheduler takes is judged by transformers when training starts."""
    if value is None:
        return []
    if not isinstance(value, dict):
        return [Problem("lr_scheduler_kwargs", "must be an object of scheduler arguments")]
    return [
        Problem(f"lr_scheduler_kwargs.{key}", "must be a number, a string or a boolean")
        for key, item in value.items()
        if item is None or isinstance(item, (dict, list))
    ]
