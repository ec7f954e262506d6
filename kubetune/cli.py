"""The ``kubetune`` command line."""

from __future__ import annotations

import io
import json
import os
import sys
from contextlib import suppress
from pathlib import Path
from typing import Annotated

import click
import typer
from typer.core import TyperGroup

from kubetune.errors import Failure, KubetuneError, Problem, outcome, redact

_BUNDLED = sys.modules[typer.BadParameter.__module__]  # the copy of click's exceptions typer bundles and raises
_USAGE = (click.ClickException, _BUNDLED.ClickException)  # a usage error (exit 2), or another error click tells
_ENDS = (click.exceptions.Exit, click.exceptions.Abort, typer.Exit, typer.Abort, BrokenPipeError)


class _Redacting:
    """A text stream that hides every suspected credential in what is written to it: whatever a command
    prints (its results, click's messages, a library's print) passes here."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text):
        return self._stream.write(redact(text) if isinstance(text, str) else text)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


class Commands(TyperGroup):
    """Every command ends the same way: whatever stops it is told on stderr and sets the exit code; no traceback.

    Input, environment and network failures: one line naming the field, file, URI or host (exit code 2);
    a usage error (a missing argument, an unknown option or command, a value of the wrong type): click's
    usage message (exit code 2); Ctrl-C: "interrupted" (130); a bug: "internal error: ..." (1).
    See ``kubetune.errors.outcome``. Nothing shown holds a credential (``redact``)."""

    def invoke(self, ctx: click.Context):
        streams = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _Redacting(sys.stdout), _Redacting(sys.stderr)
        try:
            return self._invoke(ctx)
        finally:
            sys.stdout, sys.stderr = streams

    def _invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except _ENDS:
            raise
        except _USAGE as exc:
            told = io.StringIO()
            exc.show(file=told)
            typer.echo(redact(told.getvalue()), err=True, nl=False)
            raise typer.Exit(code=exc.exit_code) from None
        except (Exception, KeyboardInterrupt) as exc:
            code, text = outcome(exc)
            typer.echo(text, err=True)
            raise typer.Exit(code=code) from None


app = typer.Typer(
    cls=Commands,
    help="Fine-tune LLMs with Kubeflow Pipelines: validate specs, compile and run pipelines.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _fail(error: KubetuneError) -> None:
    typer.echo(redact(error.report()), err=True)
    raise typer.Exit(code=2)


def check_output(path: Path, option: str = "-o", ours: tuple[str, ...] = ()) -> None:
    """Refuse, before any work, an output file that cannot be written: its folder must exist and take a file.

    An existing file is replaced only when it is one kubetune writes (it holds every marker of ``ours``):
    never a user's file, nor the command's own input."""
    if path.is_dir():
        raise Failure(f"{option} {path}", "is a folder; give a file path")
    if path.exists():
        try:
            with path.open("rb") as f:  # a regular file's first MiB is enough to recognise ours
                head = f.read(1 << 20).decode("utf-8", "replace") if path.is_file() else ""
        except OSError as e:
            raise Failure(f"{option} {path}", f"cannot be read: {e.strerror or e}") from None
        if not ours or not all(marker in head for marker in ours):
            raise Failure(f"{option} {path}", "exists and was not written by this command; remove it or choose another path")
    parent = path.parent
    if not parent.is_dir():
        raise Failure(f"{option} {path}", f"{parent} is not an existing folder")
    probe = parent / f".{path.name}.probe-{os.getpid()}"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        probe.unlink()
    except OSError as e:
        raise Failure(f"{option} {path}", f"cannot be written: {e.strerror or e}") from None


def write_output(path: Path, text: str, option: str = "-o") -> None:
    """Write ``text`` beside ``path`` and rename it into place: ``path`` is whole or untouched, never half."""
    partial = path.with_name(f".{path.name}.part-{os.getpid()}")
    try:
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, path)
    except OSError as e:
        raise Failure(f"{option} {path}", f"cannot be written: {e.strerror or e}") from None
    finally:
        with suppress(OSError):
            partial.unlink(missing_ok=True)


@app.command()
def validate(
    spec: Annotated[Path, typer.Argument(help="Spec JSON: a Training Hub call's arguments plus `algorithm`.")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write the artifact here.")] = None,
    pipeline: Annotated[bool, typer.Option(help="Paths are bound by the pipeline; do not require them.")] = False,
) -> None:
    """Check a spec and print the normalized kwargs artifact, or every problem (exit code 2).

    Example: kubetune validate examples/osft.json
    """
    from kubetune.validation import load_spec

    if output:
        check_output(output, ours=('"schema_version"', '"backend_kwargs"', '"secrets"'))  # a kwargs artifact
    result = load_spec(spec, require_paths=not pipeline)
    for note in result.notes:
        typer.echo(f"note: {note}", err=True)
    if output:
        write_output(output, result.to_json())
        typer.echo(f"wrote {output}", err=True)
    else:
        typer.echo(result.to_json(), nl=False)


@app.command()
def prepare(
    data: Annotated[str, typer.Argument(help="JSONL/JSON/Parquet file, directory, s3://bucket/key, hf://org/name.")],
    model: Annotated[str, typer.Option(help="Model whose tokenizer and chat template are used.")] = "kubetune://tiny-llama",
    output: Annotated[str, typer.Option("-o", "--output", help="Local directory for train/, validation/, ...")] = "prepared",
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

    from kubetune.runtime import resolve_model
    from kubetune.steps.prepare import check_places, prepare_dir

    try:
        check_places(data, validation, [output])  # before the model is resolved
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
    typer.echo((Path(output) / "summary.md").read_text())
    counts = f"{summary['train_samples']} + {summary['validation_samples']} samples"
    typer.echo(f"wrote {output}/train, {output}/validation ({counts})")


@app.command()
def schema() -> None:
    """Print the spec's JSON Schema."""
    from kubetune.validation import json_schema

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
    """The KFP client (connects: call it after every check that needs no cluster)."""
    from kubetune.runs.kfp_api import client

    return client(host, namespace, token)


def _credentials(host: str | None, token: str | None) -> None:
    """Never echo the token or a password in the host URL, whatever fails from here on."""
    from kubetune.runs.kfp_api import hide_credentials

    hide_credentials(host, token)


@app.command()
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
    from kubetune.runs.kfp_api import check_pipeline
    from kubetune.runs.kfp_api import upload as do_upload

    _credentials(host, token)
    check_pipeline(pipeline)
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

    from kubetune.runs import kfp_api

    _credentials(host, token)
    kfp_api.check_pipeline(pipeline)
    if wait:
        _check_wait(timeout, poll)
    arguments = kfp_api.parameters(spec, param or [], pipeline)
    kfp_client = _kfp(host, namespace, token)
    started = kfp_api.run(kfp_client, pipeline, arguments, experiment, name)
    typer.echo(f"started run {started['run_id']} of {pipeline} version {started['version']}")
    if not wait:
        return
    deadline, last = time.monotonic() + timeout, None
    try:
        while time.monotonic() < deadline:
            state = str(kfp_client.get_run(started["run_id"]).state)
            if state != last:
                typer.echo(f"run {started['run_id']}: {state}")
                last = state
            if state in ("SUCCEEDED", "FAILED", "CANCELED", "SKIPPED"):
                raise typer.Exit(code=0 if state == "SUCCEEDED" else 1)
            time.sleep(poll)
    except KeyboardInterrupt:
        typer.echo(f"interrupted: run {started['run_id']} goes on in KFP (only the waiting stopped)", err=True)
        raise typer.Exit(code=130) from None
    typer.echo(f"run {started['run_id']} still {last} after {timeout} s", err=True)
    raise typer.Exit(code=1)


def _check_wait(timeout: int, poll: float) -> None:
    problems = [
        Problem(f"--{name}", f"{value:g} is not a positive number of seconds")
        for name, value in (("timeout", timeout), ("poll", poll))
        if not value > 0
    ]
    if problems:
        raise KubetuneError(problems, "cannot wait")


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
    from kubetune.runs import kfp_api

    _credentials(host, token)
    kfp_api.check_pipeline(pipeline)
    kfp_api.check_schedule(cron, interval, max_concurrency, start, end)  # before anything connects
    arguments = kfp_api.parameters(spec, param or [], pipeline)
    created = kfp_api.schedule(
        _kfp(host, namespace, token), pipeline, name, arguments, experiment, cron, interval, max_concurrency, start, end, catchup
    )
    typer.echo(f"created recurring run {created['recurring_run_id']} ({name}) of {pipeline} version {created['version']}")


@schedule_app.command("list")
def schedule_list(
    experiment: Experiment = "kubetune", host: Host = None, namespace: Namespace = None, token: Token = None
) -> None:
    """List the recurring runs of an experiment."""
    from kubetune.runs.kfp_api import experiment_id

    _credentials(host, token)
    kfp_client = _kfp(host, namespace, token)
    listed = kfp_client.list_recurring_runs(experiment_id=experiment_id(kfp_client, experiment), page_size=100)
    for item in listed.recurring_runs or []:
        trigger = item.trigger.cron_schedule.cron if item.trigger and item.trigger.cron_schedule else "interval"
        typer.echo(f"{item.recurring_run_id}  {item.display_name}  {item.status}  {trigger}")


def _schedule_action(action: str, recurring_run_id: str, host, namespace, token) -> None:
    _credentials(host, token)
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


@app.command()
def verify(
    uri: Annotated[str, typer.Argument(help="An export: a local directory or s3://bucket/prefix.")],
) -> None:
    """Check an exported model against its manifest: exit code 0 when complete and intact, else 2 with
    one line per problem (a missing, changed or unlisted file, a missing or damaged manifest).

    Example: kubetune verify s3://models/chat/v1
    """
    from kubetune.steps.export import verify as check

    if not uri.startswith("s3://") and not Path(uri).is_dir():
        raise Failure(uri, "is not an existing folder" if not Path(uri).exists() else "is not a folder")
    problems = check(uri)
    if problems:
        for problem in problems:
            typer.echo(redact(problem if problem.startswith(uri) else f"{uri}: {problem}"), err=True)
        raise typer.Exit(code=2)
    typer.echo(f"{uri}: complete")


@app.command("run-local")
def run_local(
    output: Annotated[Path, typer.Option("-o", "--output", help="The run folder: runs and exports are written here.")] = Path(
        "kubetune-local"
    ),
    algorithm: Annotated[str, typer.Option(help="sft, osft or lora_sft (each with its own embedded kwargs).")] = "lora_sft",
    kwargs: Annotated[Path | None, typer.Option(help="JSON file of training kwargs (default: embedded).")] = None,
    data: Annotated[
        str | None, typer.Option(help="Training data: a local file or folder, s3:// or hf:// (default: the bundled sample).")
    ] = None,
    destination: Annotated[str, typer.Option(help="Also publish the model here: a directory or s3://bucket/prefix.")] = "",
    checkpoint: Annotated[str, typer.Option(help="Export the best checkpoint or the final one.")] = "best",
    overwrite: Annotated[
        bool, typer.Option(help="Let the export replace what --destination holds (not a kubetune export).")
    ] = False,
    resume: Annotated[
        bool,
        typer.Option(
            help="Continue the unfinished run in the run folder with its own options: validation and data preparation "
            "are reused, training resumes from its newest complete checkpoint; evaluation and export run again."
        ),
    ] = False,
    allow_nonempty: Annotated[
        bool, typer.Option(help="Use a run folder that holds other files (nothing in it is deleted or overwritten).")
    ] = False,
) -> None:
    """Run the whole pipeline locally with kfp.local on the embedded default (tiny model, sample data).

    Every option is checked before anything runs. The run folder's run.json says whether its run finished;
    Ctrl-C stops the run (training saves a checkpoint first), marks it unfinished and exits with 130.

    Example: kubetune run-local -o /tmp/kubetune
    Example: kubetune run-local -o /tmp/osft --algorithm osft   (mini-trainer's own loop, in CPU mode without a GPU)
    Example: kubetune run-local -o /tmp/kubetune --resume   (continue a run that was stopped)
    Example: kubetune run-local --destination s3://models/chat/v1   (AWS_* variables give endpoint and credentials)
    """
    from kubetune.runs import local

    try:  # every option and the run folder, before the pipeline starts
        arguments = local.check_options(algorithm, checkpoint, data, kwargs, destination, overwrite, output)
        record = local.check_folder(output, resume, allow_nonempty)
        if record is not None:
            local.resumed_arguments(record, arguments, output)
            typer.echo(f"kubetune run-local: resuming run {record['run_id']} in {output}", err=True)
        else:
            record = local.new_record(arguments)
    except KubetuneError as e:
        _fail(e)
    output.mkdir(parents=True, exist_ok=True)
    try:  # a run-local that took the folder since the check above is refused here, by the folder's lock
        code, record = local.supervise(output, record, say=lambda line: typer.echo(f"\n{line}", err=True))
    except KubetuneError as e:
        _fail(e)
    if code >= 128:
        typer.echo(
            f"kubetune run-local: interrupted; the run in {output} is unfinished: "
            f"`kubetune run-local -o {output} --resume` continues it",
            err=True,
        )
        raise typer.Exit(code=code)
    if code:
        typer.echo(f"kubetune run-local: the run in {output} failed (see above); --resume retries it", err=True)
        raise typer.Exit(code=code)
    result = record["result"]
    typer.echo("\nkubetune run-local finished")
    typer.echo(f"  exported model:   {result['exported_model']}")
    if record["arguments"].get("export_destination"):
        typer.echo(f"  published to:     {record['arguments']['export_destination']}")
    typer.echo(f"  kwargs artifact:  {result['kwargs_artifact']}")
    typer.echo(f"  loss curve:       {result['loss_curve']}")
    typer.echo(f"  report (HTML):    {result['report']}")
    for name, loss in result["validation_loss"].items():
        mark = "  <- best" if name == result["best_checkpoint"] else ""
        mark += "  (overfitting starts after this one)" if name == result["overfitting_after"] else ""
        typer.echo(f"  validation loss   {name}: {loss:.4f}{mark}")
    for line in result.get("skipped", []):
        typer.echo(f"  {line}")


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
    from kubetune.cluster.node import train_node as run_node
    from kubetune.cluster.node import train_worker

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
