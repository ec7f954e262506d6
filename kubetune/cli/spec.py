"""Commands on a spec and its data, no cluster needed: ``validate``, ``prepare``, ``schema``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from kubetune.cli import plan
from kubetune.cli.outputs import check_output, write_output


def validate(
    spec: Annotated[Path, typer.Argument(help="Spec JSON: a Training Hub call's arguments plus `algorithm`.")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write the artifact here.")] = None,
    pipeline: Annotated[bool, typer.Option(help="Paths are bound by the pipeline; do not require them.")] = False,
    model: Annotated[str | None, typer.Option(help="Also plan the GPU memory for this model (see `kubetune plan`).")] = None,
    gpus: plan.Gpus = 1,
    nnodes: plan.Nnodes = 1,
    gpu_memory: plan.GpuMemory = None,
) -> None:
    """Check a spec and print the normalized kwargs artifact, or every problem (exit code 2).
    With --model, its memory plan too (on stderr), and a refusal when it exceeds --gpu-memory.

    Example: kubetune validate examples/osft.json
    """
    from kubetune.validation import load_spec

    if output:
        check_output(output, ours=('"schema_version"', '"backend_kwargs"', '"secrets"'))  # a kwargs artifact
    result = load_spec(spec, require_paths=not pipeline)
    for note in result.notes:
        typer.echo(f"note: {note}", err=True)
    if model:
        plan.show_plan(result, model, gpus, nnodes, gpu_memory)
    if output:
        write_output(output, result.to_json())
        typer.echo(f"wrote {output}", err=True)
    else:
        typer.echo(result.to_json(), nl=False)


def prepare(
    data: Annotated[str, typer.Argument(help="JSONL/JSON/Parquet file, directory, s3://bucket/key, hf://org/name.")],
    model: Annotated[
        str, typer.Option(help="Model whose tokenizer and chat template are used: a directory, hub id or s3://bucket/prefix.")
    ] = "kubetune://tiny-llama",
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
    from kubetune.steps.prepare import check_places, prepare_dir, refuse_foreign

    check_places(data, validation, [output])  # the data and the output before the model is fetched or written
    if not overwrite:
        refuse_foreign({"output": Path(output)})
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
    typer.echo((Path(output) / "summary.md").read_text())
    counts = f"{summary.train_samples} + {summary.validation_samples} samples"
    typer.echo(f"wrote {output}/train, {output}/validation ({counts})")


def schema() -> None:
    """Print the spec's JSON Schema."""
    from kubetune.validation import json_schema

    typer.echo(json.dumps(json_schema(), indent=2))
