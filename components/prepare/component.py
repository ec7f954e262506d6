"""KFP wrapper of the data preparation step (logic in ``core.py``)."""

from kfp import dsl
from kfp.dsl import Dataset, Metrics, Output

from kubetune.runtime import RUNTIME_IMAGE


@dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)
def prepare_data(
    data_uri: str,
    train_data: Output[Dataset],
    validation_data: Output[Dataset],
    metrics: Output[Metrics],
    validation_ratio: float = 0.1,
    seed: int = 42,
    on_invalid: str = "fail",
):
    """Check every line of a chat JSONL file and split it into train and validation sets."""
    import json

    from kubetune.components.prepare.core import prepare

    report = prepare(data_uri, train_data.path, validation_data.path, validation_ratio, seed, on_invalid)
    train_data.metadata.update({"samples": report.train_samples, "format": "messages-jsonl"})
    validation_data.metadata.update({"samples": report.validation_samples, "format": "messages-jsonl"})
    metrics.log_metric("train_samples", report.train_samples)
    metrics.log_metric("validation_samples", report.validation_samples)
    metrics.log_metric("skipped_lines", len(report.skipped))
    print(json.dumps(report.to_dict(), indent=2))
