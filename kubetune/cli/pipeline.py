"""Commands on a pipeline and a KFP API server: ``compile``, ``upload``, ``run``; the options they share."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kubetune.cli.outputs import check_output
from kubetune.errors import Failure, KubetuneError, Problem

PIPELINE = typer.Argument(
    help="finetune, finetune-workspace (checkpoints on a PVC), finetune-trainjob (multi-node TrainJob) or evaluate-export."
)
Host = Annotated[str | None, typer.Option(help="KFP API endpoint (default: KF_PIPELINES_ENDPOINT, else the kubeconfig).")]
Namespace = Annotated[str | None, typer.Option(help="Kubernetes namespace of a multi-user KFP (default: kfp.Client's).")]
Token = Annotated[str | None, typer.Option(help="Bearer token (default: KF_PIPELINES_TOKEN, else kfp.Client's credentials).")]
Spec = Annotated[
    Path | None, typer.Option(help="Spec JSON (algorithm + Training Hub arguments): checked, then sent as training_kwargs.")
]
Params = Annotated[
    list[str] | None, typer.Option("--param", "-p", help="Pipeline argument KEY=VALUE (JSON values allowed); repeat.")
]
Experiment = Annotated[str, typer.Option(help="KFP experiment (created when missing).")]


def connect(host: str | None, namespace: str | None, token: str | None):
    """The KFP client (connects: call it after every check that needs no cluster)."""
    from kubetune.runs.kfp_api import client

    return client(host, namespace, token)


def hide_credentials(host: str | None, token: str | None) -> None:
    """Never echo the token or a password in the host URL, whatever fails from here on."""
    from kubetune.runs.kfp_api import hide_credentials

    hide_credentials(host, token)


def compile(
    pipeline: Annotated[str, PIPELINE] = "finetune",
    output: Annotated[Path, typer.Option("-o", "--output", help="Pipeline YAML to write.")] = Path("finetune.yaml"),
) -> None:
    """Compile a pipeline to YAML (byte-identical for identical input).

    Example: kubetune compile finetune -o finetune.yaml
    """
    from kubetune.runs.kfp_api import check_pipeline, compile_pipeline

    check_pipeline(pipeline)
    check_output(output, ours=("pipelineInfo:", "deploymentSpec:"))  # a compiled pipeline
    if output.suffix not in (".yaml", ".yml"):  # KFP writes its platform settings to YAML only
        raise Failure(f"-o {output}", "must end with .yaml or .yml (KFP writes pipelines as YAML)")
    compile_pipeline(pipeline, output)
    typer.echo(f"wrote {output}")


def upload(
    pipeline: Annotated[str, PIPELINE] = "finetune",
    name: Annotated[str | None, typer.Option(help="Pipeline name in KFP (default: kubetune-PIPELINE).")] = None,
    version: Annotated[str | None, typer.Option(help="Version name (default: the compiled YAML's hash).")] = None,
    host: Host = None,
    namespace: Namespace = None,
    token: Token = None,
) -> None:
    """Create the pipeline in KFP, or a new version of it; uploading the same pipeline again changes nothing.

    Example: kubetune upload finetune --host https://kfp.example.com
    """
    from kubetune.runs.kfp_api import check_pipeline
    from kubetune.runs.kfp_api import upload as do_upload

    hide_credentials(host, token)
    check_pipeline(pipeline)
    result = do_upload(connect(host, namespace, token), pipeline, name, version)
    state = "uploaded" if result["created"] == "yes" else "already there:"
    typer.echo(f"{state} pipeline {result['pipeline_id']} version {result['version']} ({result['version_id']})")


def run(
    pipeline: Annotated[str, PIPELINE] = "finetune",
    spec: Spec = None,
    param: Params = None,
    experiment: Experiment = "kubetune",
    name: Annotated[str | None, typer.Option(help="Run name.")] = None,
    wait: Annotated[bool, typer.Option(help="Wait for the run to finish, printing its state as it changes.")] = False,
    timeout: Annotated[int, typer.Option(help="Seconds to wait at most with --wait.")] = 24 * 3600,
    poll: Annotated[float, typer.Option(help="Seconds between status checks with --wait.")] = 10.0,
    host: Host = None,
    namespace: Namespace = None,
    token: Token = None,
) -> None:
    """Upload (if needed) and start a run; the spec is validated here first.

    Example: kubetune run finetune --spec examples/osft.json -p model_uri=s3://models/base -p data_uri=s3://data/chat.jsonl --wait
    """
    from kubetune.runs import kfp_api

    hide_credentials(host, token)
    kfp_api.check_pipeline(pipeline)
    if wait:
        check_wait(timeout, poll)
    arguments = kfp_api.parameters(spec, param or [], pipeline)
    kfp_client = connect(host, namespace, token)
    started = kfp_api.run(kfp_client, pipeline, arguments, experiment, name)
    typer.echo(f"started run {started['run_id']} of {pipeline} version {started['version']}")
    if wait:
        wait_for(kfp_client, started["run_id"], timeout, poll)


def check_wait(timeout: int, poll: float) -> None:
    problems = [
        Problem(f"--{name}", f"{value:g} is not a positive number of seconds")
        for name, value in (("timeout", timeout), ("poll", poll))
        if not value > 0
    ]
    if problems:
        raise KubetuneError(problems, "cannot wait")


def wait_for(kfp_client, run_id: str, timeout: int, poll: float) -> None:
    """Print the run's state as it changes; exit 0 when it succeeded, 1 when it ended otherwise or is still going."""
    import time

    deadline, last = time.monotonic() + timeout, None
    try:
        while time.monotonic() < deadline:
            state = str(kfp_client.get_run(run_id).state)
            if state != last:
                typer.echo(f"run {run_id}: {state}")
                last = state
            if state in ("SUCCEEDED", "FAILED", "CANCELED", "SKIPPED"):
                raise typer.Exit(code=0 if state == "SUCCEEDED" else 1)
            time.sleep(poll)
    except KeyboardInterrupt:
        typer.echo(f"interrupted: run {run_id} goes on in KFP (only the waiting stopped)", err=True)
        raise typer.Exit(code=130) from None
    typer.echo(f"run {run_id} still {last} after {timeout} s", err=True)
    raise typer.Exit(code=1)
