"""The ``kubetune`` command line."""

from __future__ import annotations

import json
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
) -> None:
    """Check and tokenize training data exactly as the pipeline's preparation step does.

    Every bad record is reported with its file and line (exit code 2), before any GPU is asked for.

    Example: kubetune prepare data.jsonl --model ./my-model --max-seq-len 4096 -o prepared/
    """
    import tempfile

    from kubetune.components.prepare.core import prepare
    from kubetune.runtime import resolve_model

    try:
        with tempfile.TemporaryDirectory(prefix="kubetune-model-") as workdir:
            summary = prepare(
                data,
                resolve_model(model, workdir),
                output / "train",
                output / "validation",
                validation_uri=validation,
                report_out=output / "report.json",
                summary_out=output / "summary.md",
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


@app.command()
def compile(
    output: Annotated[Path, typer.Option("-o", "--output", help="Pipeline YAML to write.")] = Path("finetune.yaml"),
) -> None:
    """Compile the finetune pipeline to YAML (byte-identical for identical input).

    Example: kubetune compile -o finetune.yaml
    """
    from kfp import compiler

    from kubetune.pipelines.finetune import finetune

    compiler.Compiler().compile(finetune, str(output))
    typer.echo(f"wrote {output}")


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
        arguments["data_uri"] = data
    if kwargs is not None:
        from kubetune.contract import load_spec

        try:  # fail fast, with file and line, before the pipeline starts
            load_spec(kwargs, require_paths=False)
        except KubetuneError as e:
            _fail(e)
        arguments["training_kwargs"] = json.loads(kwargs.read_text())
    result = run(output, **arguments)
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


if __name__ == "__main__":
    app()
