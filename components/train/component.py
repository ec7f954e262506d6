"""KFP wrapper of the training step (logic in ``core.py``). The only step that needs a GPU."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from kubetune.runtime import TRAINING_IMAGE


@dsl.component(base_image=TRAINING_IMAGE, install_kfp_package=False)
def train_model(
    kwargs_artifact: Input[Artifact],
    train_data: Input[Dataset],
    validation_data: Input[Dataset],
    model_uri: str,
    trained_model: Output[Model],
    metrics: Output[Metrics],
    workspace_dir: str = "",
    run_id: str = "",
):
    """Train with the backend the kwargs artifact names; checkpoints and the final model go to ``trained_model``.

    ``workspace_dir`` (a mounted PVC): checkpoints are kept under ``workspace_dir/run_id``, so that a retried or
    pre-empted step resumes from the last one instead of starting over.
    """
    import os

    from kubetune.components.train.core import train

    from kubetune.errors import reported

    workspace = os.path.join(workspace_dir, run_id or "run") if workspace_dir else None
    with reported():  # a mistake in the input ends the step with its report, not a traceback
        result = train(kwargs_artifact.path, model_uri, train_data.path, trained_model.path, validation_data.path, workspace)
    trained_model.metadata.update(
        {
            "final_model": str(result.final_model.relative_to(trained_model.path)),
            "checkpoints": [str(c.relative_to(trained_model.path)) for c in result.checkpoints],
            **result.metrics,
        }
    )
    for name, value in result.metrics.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            metrics.log_metric(name, value)
