"""``kubetune-node``: the command every node of a ``finetune-trainjob`` TrainJob runs; not a user command.

``kubetune-node train`` runs one node (``kubetune.cluster.node``); for ``lora_sft`` it starts torchrun,
whose processes run ``python -m kubetune.cluster.node_cli worker``. Failures end as every kubetune command's
do (``kubetune.commands``): one line, exit code 2 for input and environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kubetune.cluster import node
from kubetune.commands import command_line

app = command_line("What every node of a kubetune TrainJob runs (kubetune.cluster.trainjob.node_command).")

Kwargs = Annotated[Path, typer.Option(help="The kwargs artifact, staged on the workspace by the launcher.")]
Model = Annotated[str, typer.Option(help="Base model path (on the workspace) or hub id.")]
TrainData = Annotated[Path, typer.Option(help="Prepared training data directory.")]
Output = Annotated[Path, typer.Option(help="The run's workspace directory; checkpoints go to checkpoints/.")]
ValidationData = Annotated[Path | None, typer.Option(help="Prepared validation data directory (used when it exists).")]


def _existing(validation_data: Path | None) -> Path | None:
    return validation_data if validation_data and validation_data.exists() else None


@app.command()
def train(kwargs: Kwargs, model: Model, train_data: TrainData, output: Output, validation_data: ValidationData = None) -> None:
    """Run this node's share of the training.

    Kubeflow Trainer's torch runtime sets PET_NNODES, PET_NODE_RANK, PET_MASTER_ADDR, PET_MASTER_PORT and
    PET_NPROC_PER_NODE; the spec is validated and mapped exactly as in the in-pod training step.
    """
    raise typer.Exit(code=node.train_node(kwargs, model, train_data, _existing(validation_data), output))


@app.command(hidden=True)
def worker(kwargs: Kwargs, model: Model, train_data: TrainData, output: Output, validation_data: ValidationData = None) -> None:
    """One torchrun process of a lora_sft node."""
    node.train_worker(kwargs, model, train_data, _existing(validation_data), output)


if __name__ == "__main__":
    app()
