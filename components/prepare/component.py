"""KFP wrapper of the data preparation step (logic in ``kubetune.steps.prepare``)."""

import os

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Metrics, Output

RUNTIME_IMAGE = os.environ.get("KUBETUNE_RUNTIME_IMAGE", "ghcr.io/kubetune/kubetune-runtime:0.1.0")


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
    """Check every record, tokenize once with the model's chat template, split train/validation.

    Args:
        data_uri: The training data (see *Sources* below).
        model_uri: The model whose tokenizer and chat template are used (``kubetune://tiny-llama``: embedded).
        train_data: Directory of the training split (see *Output layout*).
        validation_data: Directory of the validation split (see *Output layout*).
        metrics: Samples, records, dropped (total and by reason), truncated, tokens min/mean/p95/max/total per split.
        report: JSON: the summary and **every** dropped record with its place and reason.
        summary: The summary as the KFP UI shows it.
        kwargs_artifact: The validated kwargs: ``max_seq_len``, ``is_pretraining``, ``document_column_name`` are
            read from it.
        validation_uri: A separate validation source; empty: split ``data_uri``.
        validation_ratio: Share held out, in [0, 1); the same data, ratio and seed give the same split.
        seed: Seed of the split.
        on_invalid: ``fail`` (stop and write nothing) or ``skip`` (drop, and list each record in the report).
        too_long: Samples over ``max_seq_len``: ``drop`` (listed in the report), ``truncate``, or ``fail``.
        dedup: Drop exact duplicates, and validation samples that repeat a training sample.
        max_seq_len: Longest sample in tokens; wins over the kwargs artifact's (0: the artifact's, or no limit).
    """
    from kubetune.errors import reported
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
        artifact.metadata.update(result.dataset_metadata(part))
    for name, value in result.metrics().items():
        metrics.log_metric(name, value)
