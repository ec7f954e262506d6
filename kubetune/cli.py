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
) -> None:
    """Run the whole pipeline locally with kfp.local on the embedded default (tiny model, sample data).

    Example: kubetune run-local -o /tmp/kubetune
    """
    from kubetune.pipelines.local import run_local as run

    arguments: dict = {"algorithm": algorithm}
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
    typer.echo(f"  kwargs artifact:  {result['kwargs_artifact']}")
    typer.echo(f"  loss curve:       {result['loss_curve']}")
    for checkpoint, loss in result["validation_loss"].items():
        mark = "  <- best" if checkpoint == result["best_checkpoint"] else ""
        typer.echo(f"  validation loss   {checkpoint}: {loss:.4f}{mark}")


if __name__ == "__main__":
    app()
