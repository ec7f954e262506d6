"""The ``kubetune`` command line."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated

import typer

from kubetune.errors import KubetuneError

app = typer.Typer(
    help="Fine-tune LLMs with Kubeflow Pipelines: validate specs, compile and run pipelines.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _fail(error: KubetuneError) -> None:
    typer.echo(error.report(), err=True)
    raise typer.Exit(code=2)


@app.command()
def validate(
    spec: Annotated[Path, typer.Argument(help="Spec JSON: a Training Hub call's arguments plus `algorithm`.")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write the artifact here.")] = None,
    pipeline: Annotated[bool, typer.Option(help="Paths are bound by the pipeline; do not require them.")] = False,
) -> None:
    """Check a spec and print the normalized kwargs artifact, or every problem (exit code 2).

    Example: kubetune validate examples/osft.json
    """
    from kubetune.contract import load_spec

    try:
        result = load_spec(spec, require_paths=not pipeline)
    except KubetuneError as e:
        _fail(e)
    for note in result.notes:
        typer.echo(f"note: {note}", err=True)
    if output:
        output.write_text(result.to_json())
        typer.echo(f"wrote {output}", err=True)
    else:
        typer.echo(result.to_json(), nl=False)


@app.command()
def prepare(
    data: Annotated[str, typer.Argument(help="JSONL/JSON/Parquet file, directory, s3://bucket/key, hf://org/name.")],
    model: Annotated[str, typer.Option(help="Model whose tokenizer and chat template are used.")] = "kubetune://tiny-llama",
    output: Annotated[Path, typer.Option("-o", "--output", help="Writes train/, validation/, report.json, summary.md.")] = Path(
        "prepared"
    ),
    validation: Annotated[str | None, typer.Option(help="A separate validation source (no split then).")] = None,
    validation_ratio: Annotated[float, typer.Option(help="Share held out for validation.")] = 0.1,
    seed: Annotated[int, typer.Option(help="Same data and seed, same split.")] = 42,
    max_seq_len: Annotated[int | None, typer.Option(help="Longest sample in tokens.")] = None,
    on_invalid: Annotated[str, typer.Option(help="fail (write nothing) or skip (drop and report).")] = "fail",
    too_long: Annotated[str, typer.Option(help="drop, truncate or fail.")] = "drop",
    dedup: Annotated[bool, typer.Option(help="Drop exact duplicates.")] = False,
    pretraining: Annotated[bool, typer.Option(help="Documents for continual pretraining (a `document` column).")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace the output directory even if kubetune did not write it.")] = False,
) -> None:
    """Check and tokenize training data exactly as the pipeline's preparation step does.

    Every bad record is reported with its file and line (exit code 2), before any GPU is asked for.
    The output directory must be new, empty, or an earlier output of this command (else --overwrite).

    Example: kubetune prepare data.jsonl --model ./my-model --max-seq-len 4096 -o prepared/
    """
    import tempfile

    from kubetune.components.prepare.core import prepare_dir
    from kubetune.runtime import resolve_model

    try:
        with tempfile.TemporaryDirectory(prefix="kubetune-model-") as workdir:
            summary = prepare_dir(
                data,
                resolve_model(model, workdir),
                output,
                overwrite=overwrite,
                validation_uri=validation,
                validation_ratio=validation_ratio,
                seed=seed,
                max_seq_len=max_seq_len,
                on_invalid=on_invalid,
                too_long=too_long,
                dedup=dedup,
                data_format="document" if pretraining else "chat",
            )
    except KubetuneError as e:
        _fail(e)
    typer.echo((output / "summary.md").read_text())
    counts = f"{summary['train_samples']} + {summary['validation_samples']} samples"
    typer.echo(f"wrote {output}/train, {output}/validation ({counts})")


@app.command()
def schema() -> None:
    """Print the spec's JSON Schema."""
    from kubetune.contract import json_schema

    typer.echo(json.dumps(json_schema(), indent=2))


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


def _kfp(host: str | None, namespace: str | None, token: str | None):
    from kubetune.kfp_ops import client

    return client(host, namespace, token)


@app.command()
def compile(
    pipeline: Annotated[str, PIPELINE] = "finetune",
    output: Annotated[Path, typer.Option("-o", "--output", help="Pipeline YAML to write.")] = Path("finetune.yaml"),
) -> None:
    """Compile a pipeline to YAML (byte-identical for identical input).

    Example: kubetune compile finetune -o finetune.yaml
    """
    from kubetune.kfp_ops import compile_pipeline

    try:
        compile_pipeline(pipeline, output)
    except KubetuneError as e:
        _fail(e)
    typer.echo(f"wrote {output}")


@app.command()
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
    from kubetune.kfp_ops import upload as do_upload

    result = do_upload(_kfp(host, namespace, token), pipeline, name, version)
    state = "uploaded" if result["created"] == "yes" else "already there:"
    typer.echo(f"{state} pipeline {result['pipeline_id']} version {result['version']} ({result['version_id']})")


@app.command()
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
    import time

    from kubetune import kfp_ops

    try:
        arguments = kfp_ops.parameters(spec, param or [], pipeline)
    except KubetuneError as e:
        _fail(e)
    kfp_client = _kfp(host, namespace, token)
    started = kfp_ops.run(kfp_client, pipeline, arguments, experiment, name)
    typer.echo(f"started run {started['run_id']} of {pipeline} version {started['version']}")
    if not wait:
        return
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        state = str(kfp_client.get_run(started["run_id"]).state)
        if state != last:
            typer.echo(f"run {started['run_id']}: {state}")
            last = state
        if state in ("SUCCEEDED", "FAILED", "CANCELED", "SKIPPED"):
            raise typer.Exit(code=0 if state == "SUCCEEDED" else 1)
        time.sleep(poll)
    typer.echo(f"run {started['run_id']} still {last} after {timeout} s", err=True)
    raise typer.Exit(code=1)


schedule_app = typer.Typer(help="Recurring runs: create, list, pause, resume, delete.", no_args_is_help=True)
app.add_typer(schedule_app, name="schedule")


@schedule_app.command("create")
def schedule_create(
    name: Annotated[str, typer.Argument(help="Name of the recurring run.")],
    pipeline: Annotated[
        str, typer.Option(help="finetune, finetune-workspace, finetune-trainjob or evaluate-export.")
    ] = "finetune",
    cron: Annotated[str | None, typer.Option(help="6-field cron, seconds first: '0 0 3 * * 1' = Mondays 03:00.")] = None,
    interval: Annotated[int | None, typer.Option(help="Seconds between runs (instead of --cron).")] = None,
    spec: Spec = None,
    param: Params = None,
    experiment: Experiment = "kubetune",
    max_concurrency: Annotated[int, typer.Option(help="Runs of this schedule at once.")] = 1,
    start: Annotated[str | None, typer.Option(help="RFC 3339 start time.")] = None,
    end: Annotated[str | None, typer.Option(help="RFC 3339 end time.")] = None,
    catchup: Annotated[bool, typer.Option(help="Backfill intervals missed while paused (off by default).")] = False,
    host: Host = None,
    namespace: Namespace = None,
    token: Token = None,
) -> None:
    """Create a recurring run, e.g. retrain every week on fresh data.

    Example: kubetune schedule create weekly-retrain --cron "0 0 3 * * 1" --spec examples/osft.json -p data_uri=s3://data/latest/
    """
    from kubetune import kfp_ops

    try:
        arguments = kfp_ops.parameters(spec, param or [], pipeline)
        created = kfp_ops.schedule(
            _kfp(host, namespace, token),
            pipeline,
            name,
            arguments,
            experiment,
            cron,
            interval,
            max_concurrency,
            start,
            end,
            catchup,
        )
    except KubetuneError as e:
        _fail(e)
    typer.echo(f"created recurring run {created['recurring_run_id']} ({name}) of {pipeline} version {created['version']}")


@schedule_app.command("list")
def schedule_list(
    experiment: Experiment = "kubetune", host: Host = None, namespace: Namespace = None, token: Token = None
) -> None:
    """List the recurring runs of an experiment."""
    from kubetune.kfp_ops import experiment_id

    kfp_client = _kfp(host, namespace, token)
    listed = kfp_client.list_recurring_runs(experiment_id=experiment_id(kfp_client, experiment), page_size=100)
    for item in listed.recurring_runs or []:
        trigger = item.trigger.cron_schedule.cron if item.trigger and item.trigger.cron_schedule else "interval"
        typer.echo(f"{item.recurring_run_id}  {item.display_name}  {item.status}  {trigger}")


def _schedule_action(action: str, recurring_run_id: str, host, namespace, token) -> None:
    kfp_client = _kfp(host, namespace, token)
    calls = {
        "paused": kfp_client.disable_recurring_run,
        "resumed": kfp_client.enable_recurring_run,
        "deleted": kfp_client.delete_recurring_run,
    }
    calls[action](recurring_run_id)
    typer.echo(f"{action} {recurring_run_id}")


@schedule_app.command("pause")
def schedule_pause(recurring_run_id: str, host: Host = None, namespace: Namespace = None, token: Token = None) -> None:
    """Stop a recurring run from starting new runs (it can be resumed)."""
    _schedule_action("paused", recurring_run_id, host, namespace, token)


@schedule_app.command("resume")
def schedule_resume(recurring_run_id: str, host: Host = None, namespace: Namespace = None, token: Token = None) -> None:
    """Let a paused recurring run start runs again."""
    _schedule_action("resumed", recurring_run_id, host, namespace, token)


@schedule_app.command("delete")
def schedule_delete(recurring_run_id: str, host: Host = None, namespace: Namespace = None, token: Token = None) -> None:
    """Delete a recurring run."""
    _schedule_action("deleted", recurring_run_id, host, namespace, token)


@app.command("run-local")
def run_local(
    output: Annotated[Path, typer.Option("-o", "--output", help="Where runs and exports are written.")] = Path("kubetune-local"),
    algorithm: Annotated[str, typer.Option(help="sft, osft or lora_sft (only lora_sft trains on CPU).")] = "lora_sft",
    kwargs: Annotated[Path | None, typer.Option(help="JSON file of training kwargs (default: embedded).")] = None,
    data: Annotated[str | None, typer.Option(help="Training data (default: the bundled sample).")] = None,
    destination: Annotated[str, typer.Option(help="Also publish the model here: a directory or s3://bucket/prefix.")] = "",
    checkpoint: Annotated[str, typer.Option(help="Export the best checkpoint or the final one.")] = "best",
) -> None:
    """Run the whole pipeline locally with kfp.local on the embedded default (tiny model, sample data).

    Example: kubetune run-local -o /tmp/kubetune
    Example: kubetune run-local --destination s3://models/chat/v1   (AWS_* variables give endpoint and credentials)
    """
    from kubetune.pipelines.local import run_local as run

    arguments: dict = {"algorithm": algorithm, "export_destination": destination, "export_checkpoint": checkpoint}
    if data:
        arguments["data_uri"] = str(Path(data).resolve()) if Path(data).exists() else data
    if kwargs is not None:
        from kubetune.contract import load_spec

        try:  # fail fast, with file and line, before the pipeline starts
            load_spec(kwargs, require_paths=False)
        except KubetuneError as e:
            _fail(e)
        arguments["training_kwargs"] = json.loads(kwargs.read_text())
    try:
        result = run(output, **arguments)
    except RuntimeError as e:  # kfp.local's way of saying a step failed; the step's own report is above
        if "finished with status" not in str(e):
            raise
        message = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
        typer.echo(f"\nkubetune run-local: {message} The step's report is printed above.", err=True)
        raise typer.Exit(code=1) from None
    typer.echo("\nkubetune run-local finished")
    typer.echo(f"  exported model:   {result['exported_model']}")
    if destination:
        typer.echo(f"  published to:     {destination}")
    typer.echo(f"  kwargs artifact:  {result['kwargs_artifact']}")
    typer.echo(f"  loss curve:       {result['loss_curve']}")
    typer.echo(f"  report (HTML):    {result['report']}")
    for checkpoint, loss in result["validation_loss"].items():
        mark = "  <- best" if checkpoint == result["best_checkpoint"] else ""
        mark += "  (overfitting starts after this one)" if checkpoint == result["overfitting_after"] else ""
        typer.echo(f"  validation loss   {checkpoint}: {loss:.4f}{mark}")


@app.command("train-node")
def train_node(
    kwargs: Annotated[Path, typer.Option(help="The kwargs artifact, staged on the workspace by the launcher.")],
    model: Annotated[str, typer.Option(help="Base model path (on the workspace) or hub id.")],
    train_data: Annotated[Path, typer.Option(help="Prepared training data directory.")],
    output: Annotated[Path, typer.Option(help="The run's workspace directory; checkpoints go to checkpoints/.")],
    validation_data: Annotated[Path | None, typer.Option(help="Prepared validation data directory.")] = None,
    worker: Annotated[bool, typer.Option(hidden=True, help="One torchrun process of a lora_sft node.")] = False,
) -> None:
    """Run one node of a multi-node TrainJob (the command every node of the `finetune-trainjob` pipeline runs).

    Kubeflow Trainer's torch runtime sets PET_NNODES, PET_NODE_RANK, PET_MASTER_ADDR, PET_MASTER_PORT and
    PET_NPROC_PER_NODE; the spec is validated and mapped exactly as in the in-pod training step.
    """
    from kubetune.components.train.node import train_node as run_node
    from kubetune.components.train.node import train_worker

    validation = validation_data if validation_data and validation_data.exists() else None
    try:
        if worker:
            train_worker(kwargs, model, train_data, validation, output)
            return
        code = run_node(kwargs, model, train_data, validation, output)
    except KubetuneError as e:
        _fail(e)
    raise typer.Exit(code=code)


if __name__ == "__main__":
    app()
