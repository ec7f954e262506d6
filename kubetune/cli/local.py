"""``kubetune run-local``: the whole pipeline on this machine, with kfp.local."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kubetune.backends.registry import DEFAULT_ALGORITHM, algorithms

NOT_PROMOTED = 3  # exit code of a run that finished but whose model the promotion gate refused (nothing exported)


def run_local(
    output: Annotated[Path, typer.Option("-o", "--output", help="The run folder: runs and exports are written here.")] = Path(
        "kubetune-local"
    ),
    algorithm: Annotated[
        str, typer.Option(help=f"{', '.join(algorithms())} (each with its own embedded kwargs).")
    ] = DEFAULT_ALGORITHM,
    kwargs: Annotated[Path | None, typer.Option(help="JSON file of training kwargs (default: embedded).")] = None,
    data: Annotated[
        str | None, typer.Option(help="Training data: a local file or folder, s3:// or hf:// (default: the bundled sample).")
    ] = None,
    destination: Annotated[
        str, typer.Option(help="Also publish the model here: a directory, s3://bucket/prefix or oci://registry/repository:tag.")
    ] = "",
    checkpoint: Annotated[str, typer.Option(help="Export the best checkpoint or the final one.")] = "best",
    overwrite: Annotated[
        bool, typer.Option(help="Let the export replace what --destination holds (not a kubetune export).")
    ] = False,
    gate: Annotated[
        str,
        typer.Option(
            help='Promotion gate: thresholds as JSON, e.g. \'{"max_validation_loss": 2.5, "no_overfitting": true}\'; '
            "a model that misses one is not exported (exit code 3)."
        ),
    ] = "",
    evaluate_benchmark: Annotated[
        bool,
        typer.Option(
            help="Benchmark the base and the fine-tuned model with lm-eval (offline: tasks built from the validation "
            "chats) and show both scores."
        ),
    ] = False,
    modelcar_base_image: Annotated[
        str,
        typer.Option(
            help="--destination oci://...: the modelcar's base image, a registry reference or oci-layout:<dir> "
            "(default registry.access.redhat.com/ubi9/ubi-micro:latest)."
        ),
    ] = "",
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
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show the run's full log (kfp.local's and every step's output) as it runs.")
    ] = False,
) -> None:
    """Run the whole pipeline locally with kfp.local on the embedded default (tiny model, sample data).

    Every option is checked before anything runs. It shows one line per step (status, duration, key figures),
    the training's progress and a summary; the full log is in the run folder's run.log (--verbose shows it as it runs).
    The run folder's run.json says whether its run finished; Ctrl-C stops the run (training saves a checkpoint
    first), marks it unfinished and exits with 130.

    Example: kubetune run-local -o /tmp/kubetune
    Example: kubetune run-local -o /tmp/osft --algorithm osft   (mini-trainer's own loop, in CPU mode without a GPU)
    Example: kubetune run-local -o /tmp/kubetune --resume   (continue a run that was stopped)
    Example: kubetune run-local --destination s3://models/chat/v1   (AWS_* variables give endpoint and credentials)
    Example: kubetune run-local -o /tmp/bench --evaluate-benchmark   (lm-eval scores of the base and the fine-tuned model)
    """
    from kubetune.runs.local_options import check_options, resumed_arguments
    from kubetune.runs.run_folder import check_folder, new_record
    from kubetune.runs.supervise import LOG, supervise
    from kubetune.runs.view import View

    # every option and the run folder, before the pipeline starts
    arguments = check_options(
        algorithm,
        checkpoint,
        data,
        kwargs,
        destination,
        overwrite,
        output,
        gate=gate,
        evaluate_benchmark=evaluate_benchmark,
        modelcar_base_image=modelcar_base_image,
    )
    record = check_folder(output, resume, allow_nonempty)
    if record is not None:
        resumed_arguments(record, arguments, output)
        typer.echo(f"kubetune run-local: resuming run {record['run_id']} in {output}", err=True)
    else:
        record = new_record(arguments)
    output.mkdir(parents=True, exist_ok=True)
    typer.echo(f"kubetune run-local: run {record['run_id']}; full log: {output / LOG}")
    view = View(verbose=verbose)
    # a run-local that took the folder since the check above is refused here, by the folder's lock
    try:
        code, record = supervise(output, record, say=view.say, show=view.feed)
    except BaseException:
        view.close()
        raise
    view.close(failed=0 < code < 128)  # a failure no step reported: the log's last lines
    if code >= 128:
        typer.echo(
            f"kubetune run-local: interrupted; the run in {output} is unfinished: "
            f"`kubetune run-local -o {output} --resume` continues it",
            err=True,
        )
        raise typer.Exit(code=code)
    if code:
        log = output / LOG
        typer.echo(f"kubetune run-local: the run in {output} failed (see above; full log: {log}); --resume retries it", err=True)
        raise typer.Exit(code=code)
    show(record, output / LOG)
    if not record["result"].get("promoted", True):  # the run did what was asked; the model missed a threshold
        raise typer.Exit(code=NOT_PROMOTED)


def show(record: dict, log: Path | None = None) -> None:
    """What a finished run made, the promotion gate's verdict, the validation loss of each checkpoint, and where the
    run's full ``log`` is."""
    result = record["result"]
    typer.echo("\nkubetune run-local finished")
    if result.get("promoted", True):
        typer.echo("  promoted")
        typer.echo(f"  exported model:   {result['exported_model']}")
        if record["arguments"].get("export_destination"):
            typer.echo(f"  published to:     {record['arguments']['export_destination']}")
    else:
        typer.echo(f"  NOT PROMOTED: {'; '.join(result['not_promoted'])}")
        typer.echo("  nothing was exported" + (" or published" if record["arguments"].get("export_destination") else ""))
    if result.get("decision"):
        typer.echo(f"  gate decision:    {result['decision']}")
    typer.echo(f"  kwargs artifact:  {result['kwargs_artifact']}")
    typer.echo(f"  loss curve:       {result['loss_curve']}")
    typer.echo(f"  report (HTML):    {result['report']}")
    if log is not None:
        typer.echo(f"  full log:         {log}")
    for name, loss in result["validation_loss"].items():
        mark = "  <- best" if name == result["best_checkpoint"] else ""
        mark += "  (overfitting starts after this one)" if name == result["overfitting_after"] else ""
        typer.echo(f"  validation loss   {name}: {loss:.4f}{mark}")
    for line in result.get("skipped", []):
        typer.echo(f"  {line}")
    if result.get("benchmark"):
        show_benchmark(result["benchmark"], result["benchmark_report"])


def show_benchmark(metrics: dict[str, float], report: str) -> None:
    """Each benchmark task's base and fine-tuned score and the delta (positive: better), from the step's metrics."""
    typer.echo(f"  benchmark report: {report}")
    for name in (key.removesuffix("_base") for key in metrics if key.endswith("_base")):
        base, tuned, delta = (metrics[f"{name}_{part}"] for part in ("base", "tuned", "delta"))
        typer.echo(f"  benchmark         {name}: base {base:.4g}, fine-tuned {tuned:.4g}, delta {delta + 0.0:+.4g}")
    delta, forgetting = metrics["benchmark_delta"] + 0.0, metrics["forgetting"]
    typer.echo(f"  benchmark delta   {delta:+.4g} (mean; positive: better), forgetting {forgetting:.4g}")
