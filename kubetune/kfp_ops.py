"""What the CLI does with a KFP API server: compile, upload (idempotent), run, and recurring runs.

Connection settings are ``kfp.Client``'s own: ``host`` or ``KF_PIPELINES_ENDPOINT``, else the kubeconfig's
cluster (or in-cluster config); ``namespace`` for multi-user installs; a bearer token from ``token`` or
``KF_PIPELINES_TOKEN``, else kfp.Client's credentials (kubeconfig, ServiceAccount).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from kubetune.errors import KubetuneError, Problem


def pipelines() -> dict[str, Any]:
    from kubetune.pipelines.evaluate_export import evaluate_export
    from kubetune.pipelines.finetune import finetune, finetune_trainjob, finetune_workspace

    return {
        "finetune": finetune,
        "finetune-workspace": finetune_workspace,
        "finetune-trainjob": finetune_trainjob,
        "evaluate-export": evaluate_export,
    }


def compile_pipeline(name: str, output: str | Path) -> Path:
    """Compile a pipeline to YAML; the same code always gives the same bytes."""
    from kfp import compiler

    if name not in pipelines():
        raise KubetuneError(
            [Problem("pipeline", f"unknown pipeline {name!r}; choose from {', '.join(pipelines())}")], "cannot compile"
        )
    compiler.Compiler().compile(pipelines()[name], str(output))
    return Path(output)


def client(host: str | None = None, namespace: str | None = None, token: str | None = None):
    import kfp

    token = token or os.environ.get("KF_PIPELINES_TOKEN")
    kwargs = {"namespace": namespace} if namespace else {}
    return kfp.Client(host=host, existing_token=token, **kwargs)


def upload(kfp_client, pipeline: str, name: str | None = None, version: str | None = None) -> dict[str, str]:
    """Create the pipeline, or a new version of it, by name. The version name defaults to the content's
    hash, so uploading the same pipeline twice creates nothing new."""
    name = name or f"kubetune-{pipeline}"
    with tempfile.TemporaryDirectory() as tmp:
        package = compile_pipeline(pipeline, Path(tmp) / f"{pipeline}.yaml")
        version = version or "v-" + hashlib.sha256(package.read_bytes()).hexdigest()[:12]
        pipeline_id = kfp_client.get_pipeline_id(name)
        if pipeline_id is None:
            created = kfp_client.upload_pipeline(str(package), pipeline_name=name)
            pipeline_id = created.pipeline_id
            # the first upload's version carries the pipeline's name; add ours so runs can name it
        existing = _version_id(kfp_client, pipeline_id, version)
        if existing:
            return {"pipeline_id": pipeline_id, "version_id": existing, "version": version, "created": "no"}
        made = kfp_client.upload_pipeline_version(str(package), version, pipeline_id=pipeline_id)
        return {"pipeline_id": pipeline_id, "version_id": made.pipeline_version_id, "version": version, "created": "yes"}


def _version_id(kfp_client, pipeline_id: str, version: str) -> str | None:
    predicate = {"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": version}]}
    found = kfp_client.list_pipeline_versions(pipeline_id, filter=json.dumps(predicate)).pipeline_versions or []
    return found[0].pipeline_version_id if found else None


def parameters(spec: Path | None, params: list[str], pipeline: str = "finetune") -> dict[str, Any]:
    """Pipeline arguments: a spec file becomes ``algorithm`` + ``training_kwargs`` (validated first, with file
    and line on error); ``KEY=VALUE`` pairs are parsed as JSON when they can be (numbers, booleans, lists).

    Nothing that looks like a credential is ever sent: every argument (spec and ``-p`` values, keys too) is
    scanned first, and the report names the argument without echoing it."""
    from kubetune.contract import validate_spec
    from kubetune.contract.secrets import HINT, redact, scan_document, shown
    from kubetune.contract.spec import read_document

    arguments: dict[str, Any] = {}
    validated = None
    if spec is not None:  # read once, in bounded memory; what is validated is what is sent
        document, lines = read_document(spec)
        validated = validate_spec(document, require_paths=False, source=str(spec), lines=lines)
        document = dict(document)
        arguments["algorithm"] = document.pop("algorithm")
        arguments["training_kwargs"] = document
    problems = []
    for pair in params:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            problems.append(Problem(f"-p {shown(pair)}", "is not KEY=VALUE"))
            continue
        try:
            arguments[key] = json.loads(value, parse_constant=_not_a_number)
        except ValueError:
            arguments[key] = value
    suspects, hidden = scan_document(arguments)
    problems += [Problem(f"argument `{s.where}`", s.reason, HINT) for s in suspects]
    if validated is None and isinstance(arguments.get("training_kwargs"), dict) and not suspects:
        validated = validate_spec({"algorithm": arguments.get("algorithm"), **arguments["training_kwargs"]}, require_paths=False)
    if validated is not None and pipeline == "finetune-trainjob":  # the TrainJob places the nodes, not the spec
        from kubetune.components.train.launch import placement_problems

        problems += placement_problems(validated.params, arguments.get("nnodes", 2), arguments.get("gpus", 1))
    if problems:
        shown_problems = [Problem(redact(p.where, hidden), redact(p.message, hidden), p.hint) for p in problems]
        raise KubetuneError(shown_problems, "invalid parameters")
    return arguments


def _not_a_number(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # a NaN/Infinity -p value stays the string the user wrote


def experiment_id(kfp_client, name: str) -> str:
    return kfp_client.create_experiment(name).experiment_id  # returns the existing one when the name is taken


def run(kfp_client, pipeline: str, arguments: dict, experiment: str, run_name: str | None = None) -> dict[str, str]:
    uploaded = upload(kfp_client, pipeline)
    created = kfp_client.run_pipeline(
        experiment_id=experiment_id(kfp_client, experiment),
        job_name=run_name or f"{pipeline}-{uploaded['version']}",
        params=arguments,
        pipeline_id=uploaded["pipeline_id"],
        version_id=uploaded["version_id"],
    )
    return {"run_id": created.run_id, **uploaded}


def schedule(
    kfp_client,
    pipeline: str,
    name: str,
    arguments: dict,
    experiment: str,
    cron: str | None = None,
    interval_seconds: int | None = None,
    max_concurrency: int = 1,
    start: str | None = None,
    end: str | None = None,
    catchup: bool = False,
) -> dict[str, str]:
    """A recurring run: a 6-field cron expression (seconds first, as KFP's scheduler reads it) or an interval."""
    if bool(cron) == bool(interval_seconds):
        raise KubetuneError([Problem("schedule", "give exactly one of --cron or --interval")], "cannot schedule")
    if cron and len(cron.split()) != 6:
        raise KubetuneError(
            [Problem("cron", f"{cron!r} has {len(cron.split())} fields; KFP wants 6, seconds first (e.g. '0 0 3 * * 1')")],
            "cannot schedule",
        )
    uploaded = upload(kfp_client, pipeline)
    created = kfp_client.create_recurring_run(
        experiment_id=experiment_id(kfp_client, experiment),
        job_name=name,
        cron_expression=cron,
        interval_second=interval_seconds,
        max_concurrency=max_concurrency,
        no_catchup=not catchup,
        start_time=start,
        end_time=end,
        params=arguments,
        pipeline_id=uploaded["pipeline_id"],
        version_id=uploaded["version_id"],
    )
    return {"recurring_run_id": created.recurring_run_id, **uploaded}
