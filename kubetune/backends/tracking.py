"""Experiment tracking on every backend, with Training Hub 0.11.2's parameters and their meaning.

W&B is on when a ``wandb_*`` parameter or ``WANDB_PROJECT`` is set, MLflow when an ``mlflow_*`` parameter,
``MLFLOW_TRACKING_URI`` or ``MLFLOW_EXPERIMENT_NAME`` is, TensorBoard when ``tensorboard_log_dir`` is (mini-trainer
has none: validation says so). Credentials (``WANDB_API_KEY``, ``MLFLOW_TRACKING_TOKEN``, ...) stay in the
environment: nothing here writes them anywhere.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from kubetune.errors import KubetuneError, Problem
from kubetune.secrets import find

WANDB = ("wandb_project", "wandb_entity", "wandb_run_name")
MLFLOW = ("mlflow_tracking_uri", "mlflow_experiment_name", "mlflow_run_name")
# the environment Training Hub fills unset parameters from (osft, lora_sft); instructlab-training reads it itself
FROM_ENV = {
    "wandb_project": "WANDB_PROJECT",
    "wandb_entity": "WANDB_ENTITY",
    "wandb_run_name": "WANDB_RUN_NAME",
    "mlflow_tracking_uri": "MLFLOW_TRACKING_URI",
    "mlflow_experiment_name": "MLFLOW_EXPERIMENT_NAME",
    "mlflow_run_name": "MLFLOW_RUN_NAME",
}
# the environment TRL's (transformers') tracking callbacks read their settings from
TRL_ENV = {**{k: v for k, v in FROM_ENV.items() if k != "wandb_run_name"}, "tensorboard_log_dir": "TENSORBOARD_LOGGING_DIR"}
PACKAGES = {
    "wandb": ("wandb", "wandb_project"),
    "mlflow": ("mlflow", "mlflow_tracking_uri"),
    "tensorboard": ("tensorboard", "tensorboard_log_dir"),
}
SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
OFFLINE = ("offline", "dryrun", "disabled")


def from_env(params: dict[str, Any]) -> dict[str, str]:
    """Tracking parameters ``params`` leaves unset, from the environment, as Training Hub fills them for osft and
    lora_sft. A value holding a credential is refused: the backend would write it to its logs."""
    values = {key: os.environ[env] for key, env in FROM_ENV.items() if not params.get(key) and os.environ.get(env)}
    if leaked := [FROM_ENV[key] for key, value in values.items() if find(value, key)]:
        hint = "keep credentials in MLFLOW_TRACKING_TOKEN / MLFLOW_TRACKING_PASSWORD / WANDB_API_KEY"
        raise KubetuneError([Problem(env, "holds a credential", hint) for env in leaked], "cannot track this run")
    return values


def wandb_on(params: dict[str, Any]) -> bool:
    return any(params.get(k) for k in WANDB) or bool(os.environ.get("WANDB_PROJECT"))


def mlflow_on(params: dict[str, Any]) -> bool:
    return any(params.get(k) for k in MLFLOW) or bool(
        os.environ.get("MLFLOW_TRACKING_URI") or os.environ.get("MLFLOW_EXPERIMENT_NAME")
    )


def trackers(params: dict[str, Any]) -> list[str]:
    """The trackers a run reports to (TRL's ``report_to``), ``["none"]`` for none."""
    on = [name for name, yes in (("wandb", wandb_on(params)), ("mlflow", mlflow_on(params))) if yes]
    if params.get("tensorboard_log_dir"):
        on.append("tensorboard")
    return on or ["none"]


def trl_env(params: dict[str, Any]) -> dict[str, str]:
    """The curated parameters as the environment TRL's tracking callbacks read (Training Hub sets the same)."""
    return {env: str(params[key]) for key, env in TRL_ENV.items() if params.get(key)}


def tracking_env(params: dict[str, Any], output_dir: str | Path, needs_project: bool = True) -> dict[str, str]:
    """The environment every backend trains in, after refusing what would fail or be dropped once training runs:
    offline W&B runs kept beside the checkpoints (``WANDB_DIR``, unless set), MLflow's local file store allowed
    where the tracking URI names one (MLflow 3 refuses it otherwise). ``needs_project``: the backend logs to W&B
    only with a project (instructlab-training, mini-trainer; TRL falls back to "huggingface")."""
    check(params, needs_project)
    env: dict[str, str] = {}
    if wandb_on(params) and not os.environ.get("WANDB_DIR"):
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        env["WANDB_DIR"] = str(Path(output_dir).resolve())
    uri = params.get("mlflow_tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI") or ""
    if mlflow_on(params) and urlparse(uri).scheme in ("", "file") and "MLFLOW_ALLOW_FILE_STORE" not in os.environ:
        env["MLFLOW_ALLOW_FILE_STORE"] = "true"
    return env


def offline_key(params: dict[str, Any]) -> dict[str, str]:
    """mini-trainer refuses to start W&B without ``WANDB_API_KEY``, even offline where no key is used: an empty one."""
    offline = os.environ.get("WANDB_MODE", "").lower() in OFFLINE
    return {"WANDB_API_KEY": ""} if wandb_on(params) and offline and "WANDB_API_KEY" not in os.environ else {}


def check(params: dict[str, Any], needs_project: bool) -> None:
    """Tracking that was asked for but could not happen: one error naming the parameter, before training starts."""
    problems = []
    asked = {"wandb": wandb_on(params), "mlflow": mlflow_on(params), "tensorboard": bool(params.get("tensorboard_log_dir"))}
    for tracker, (package, field) in PACKAGES.items():
        if asked[tracker] and importlib.util.find_spec(package) is None:
            problems.append(Problem(field, f"asks for {tracker}, but the {package} package is not installed in this image"))
    if needs_project and asked["wandb"] and not (params.get("wandb_project") or os.environ.get("WANDB_PROJECT")):
        given = next(k for k in WANDB if params.get(k))
        problems.append(Problem(given, "needs wandb_project (or WANDB_PROJECT): without it the backend logs nothing to W&B"))
    uri = params.get("mlflow_tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI")
    if asked["mlflow"] and not uri:
        given = next((k for k in MLFLOW if params.get(k)), "mlflow_experiment_name")
        problems.append(
            Problem(given, "needs mlflow_tracking_uri (or MLFLOW_TRACKING_URI): MLflow's default is a database in the pod")
        )
    elif asked["mlflow"] and urlparse(uri).scheme.split("+")[0] in SQL_SCHEMES and importlib.util.find_spec("sqlalchemy") is None:
        problems.append(
            Problem("mlflow_tracking_uri", "names a database store, which needs the full mlflow package (sqlalchemy)")
        )
    if problems:
        raise KubetuneError(problems, "cannot track this run")
