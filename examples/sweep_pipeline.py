"""A sweep: our ``finetune`` pipeline run once per kwargs variant in parallel, then the variant with the lowest
validation loss promoted (copied to ``destination``) with a Markdown table of all of them.

    python examples/sweep_pipeline.py            # compile to sweep_pipeline.yaml
    python examples/sweep_pipeline.py --local    # run here with kfp.local (CPU, a few minutes): the best in ./sweep-best

On a cluster: ``destination`` is best ``s3://bucket/prefix``; the promoting step gets the S3 credentials from the
Kubernetes secret ``s3_secret`` (as our own export step does). A path destination must be on a volume that step
mounts: add ``kubernetes.mount_pvc(promote, pvc_name=..., mount_path=...)`` in ``sweep``, or the model is lost with
its pod. A variant its promotion gate refuses is not a failure (it is listed, never promoted); a variant that fails
(a step ends in error) fails the loop, and KFP then runs no promotion: nothing is promoted, the run fails.
"""

import sys
from pathlib import Path

from kfp import compiler, dsl
from kfp.dsl import Input, Markdown, Model, Output

from kubetune.pipelines.finetune import finetune
from kubetune.pipelines.kubernetes import use_secrets
from kubetune.pipelines.parameters import EMBEDDED_KWARGS
from kubetune.runtime import RUNTIME_IMAGE, SAMPLE_DATA_URI, TINY_MODEL_URI

VARIANTS = [{**EMBEDDED_KWARGS, "learning_rate": rate} for rate in (0.005, 0.0005)]  # Training Hub kwargs, one per run


@dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)
def promote_best(models: Input[list[Model]], destination: str, promoted: Output[Model], table: Output[Markdown]) -> float:
    """Copy the model with the lowest best validation loss to ``destination`` (a path or s3://, through kubetune's
    export: checksummed, published whole) and tabulate every variant; returns the promoted model's loss.

    Each exported model carries its loss curve (``loss_curve.json``) and its kwargs (``kubetune-spec.json``); a
    variant its promotion gate refused (``promoted: False``, no weights) is listed with its reasons, never promoted."""
    from pathlib import Path

    from kubetune.contract import TrainingSpec
    from kubetune.errors import KubetuneError, Problem, reported
    from kubetune.steps.curve import LossCurve
    from kubetune.steps.export import CardFacts, export

    passed = [m for m in models if m.metadata.get("promoted", True)]
    refused = [f"- not promoted by its gate: {'; '.join(m.metadata.get('reasons', []))}\n" for m in models if m not in passed]
    with reported():  # ends the step with one line, not a traceback
        if not passed:
            problem = Problem("models", f"all {len(models)} variants were refused by their promotion gate")
            raise KubetuneError([problem], "nothing to promote")
        curves = [LossCurve.read(Path(m.path, "loss_curve.json")) for m in passed]
        specs = [TrainingSpec.read(Path(m.path, "kubetune-spec.json")) for m in passed]
        best = min(range(len(passed)), key=lambda i: curves[i].best.loss)
        facts = CardFacts(passed[best].metadata.get("base_model"), specs[best], curves[best])
        result = export(passed[best].path, destination, card=facts)  # refuses a destination kubetune did not write
    promoted.metadata.update({**result.metadata(), "checkpoint": passed[best].metadata.get("checkpoint")})
    Path(promoted.path).write_text(result.card)

    varied = sorted({k for spec in specs for k, v in spec.params.items() if v != specs[best].params.get(k)})
    rows = [[*varied, "best validation loss", "checkpoint", ""], ["---"] * (len(varied) + 3)]
    for i, (curve, spec) in enumerate(zip(curves, specs, strict=True)):
        promotion = f"promoted to `{destination}`" if i == best else ""
        rows.append([*(str(spec.params.get(k)) for k in varied), f"{curve.best.loss:.4f}", curve.best.checkpoint, promotion])
    Path(table.path).write_text("".join(f"| {' | '.join(row)} |\n" for row in rows) + "".join(refused))
    print(Path(table.path).read_text())
    return curves[best].best.loss


@dsl.pipeline(name="my-finetune-sweep")
def sweep(
    destination: str,
    variants: list = VARIANTS,
    model_uri: str = TINY_MODEL_URI,
    data_uri: str = SAMPLE_DATA_URI,
    promotion_gate: str = "",
    benchmark_tasks: str = "",
    benchmark_limit: int = 0,
    s3_secret: str = "kubetune-s3",
    hf_secret: str = "kubetune-hf",
    tracking_secret: str = "kubetune-tracking",
) -> Model:
    """``destination``: where the best model goes: ``s3://bucket/prefix``, or a path (on a PVC mounted in promote-best).
    ``promotion_gate``: finetune's thresholds (JSON), checked for each variant; empty: every variant competes. Its
    benchmark thresholds (min_benchmark_delta, max_forgetting) need ``benchmark_tasks``, run for each variant.
    ``*_secret``: names of Kubernetes secrets, as in finetune (missing ones are skipped)."""
    secrets = {"s3_secret": s3_secret, "hf_secret": hf_secret, "tracking_secret": tracking_secret}
    with dsl.ParallelFor(variants) as kwargs:
        # export_destination="" (the default): each variant's model stays in its artifact until one is promoted
        tuned = finetune(
            training_kwargs=kwargs,
            model_uri=model_uri,
            data_uri=data_uri,
            promotion_gate=promotion_gate,
            benchmark_tasks=benchmark_tasks,
            benchmark_limit=benchmark_limit,
            **secrets,
        )
    promote = promote_best(models=dsl.Collected(tuned.outputs["model"]), destination=destination)
    use_secrets(promote, "export", secrets)  # S3 (and hub) credentials as env vars, as finetune's export step gets them
    return promote.outputs["promoted"]


if __name__ == "__main__":
    if "--local" in sys.argv:
        from kubetune.runs.kfp_local import init  # kfp.local.init, able to read finetune's model output (a dsl.OneOf)

        init(pipeline_root="sweep-local")
        print(sweep(destination=str(Path("sweep-best").resolve())).output.metadata)
    else:
        compiler.Compiler().compile(sweep, "sweep_pipeline.yaml")
        print("wrote sweep_pipeline.yaml")
