"""``kubetune plan``: the memory plan of a spec, before any GPU is asked for; its options are shared with ``validate``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Model = Annotated[
    str,
    typer.Option(
        help="The model's config.json or directory, s3://bucket/prefix, a hub id or kubetune://tiny-llama (no weights read)."
    ),
]
Gpus = Annotated[int, typer.Option(min=1, help="GPUs per node (one training process each).")]
Nnodes = Annotated[int, typer.Option(min=1, help="Nodes.")]
GpuMemory = Annotated[float | None, typer.Option("--gpu-memory", min=0.0, max=1e6, help="Memory of one GPU in GiB.")]
AcceleratorType = Annotated[
    str,
    typer.Option(help="The GPUs' resource name or product (nvidia.com/mig-3g.40gb, NVIDIA-H100-80GB-HBM3), for their memory."),
]


def plan(
    spec: Annotated[Path, typer.Argument(help="Spec JSON: a Training Hub call's arguments plus `algorithm`.")],
    model: Model,
    gpus: Gpus = 1,
    nnodes: Nnodes = 1,
    gpu_memory: GpuMemory = None,
    accelerator_type: AcceleratorType = "",
) -> None:
    """Print the peak GPU memory per rank of one training step; refuse (exit code 2) when it exceeds the GPU's memory.

    Example: kubetune plan examples/osft.json --model ./granite-3.3-8b-instruct --gpus 8 --gpu-memory 80
    """
    from kubetune.validation import load_spec

    show_plan(load_spec(spec, require_paths=False), model, gpus, nnodes, gpu_memory, accelerator_type, err=False)


def show_plan(
    spec, model: str, gpus: int, nnodes: int, gpu_memory: float | None, accelerator_type: str = "", err: bool = True
) -> None:
    """Print the plan of a validated spec (on stderr unless ``err`` is false), then refuse when it does not fit."""
    from kubetune.memory.verdict import plan_spec

    verdict = plan_spec(spec, model, gpus, nnodes, gpu_memory, accelerator_type)
    typer.echo(verdict.markdown, err=err)
    verdict.refuse()
