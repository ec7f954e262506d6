"""KFP wrapper of the data preparation step (logic in ``core.py``)."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Metrics, Output

from kubetune.runtime import RUNTIME_IMAGE


@dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)
def prepare_data(
    data_uri: str,
    model_uri: str,
    train_data: Output[Dataset],
    validation_data: Output[Dataset],
    metrics: Output[Metrics],
    report: Output[Artifact],
    summary: Output[Markdown],
    kwargs_artifact: Input[Artifact] = None,
    validation_uri: str = "",
    validation_ratio: float = 0.1,
    seed: int = 42,
    on_invalid: str = "fail",
    too_long: str = "drop",
    dedup: bool = False,
    max_seq_len: int = 0,
):
    """Check every record, tokenize once with the model's chat template, split train/validation."""
    from kubetune.errors import reported
    from kubetune.steps.prepare import metrics as flat_metrics
    from kubetune.steps.prepare import prepare_step

    with reported():  # a mistake in the input ends the step with its report, not a traceback
        result = prepare_step(
            data_uri,
            model_uri,
            kwargs_artifact.path if kwargs_artifact else None,
            train_out=train_data.path,
            validation_out=validation_data.path,
            validation_uri=validation_uri or None,
            report_out=report.path,
            summary_out=summary.path,
            validation_ratio=validation_ratio,
            seed=seed,
            on_invalid=on_invalid,
            too_long=too_long,
            dedup=dedup,
            max_seq_len=max_seq_len or None,
        )
    for part, artifact in (("train", train_data), ("validation", validation_data)):
        artifact.metadata.update(
            {"format": "kubetune-tokenized", "samples": result[f"{part}_samples"], "tokens": result[f"{part}_tokens"]["total"]}
        )
    for name, value in flat_metrics(result).items():
        metrics.log_metric(name, value)
