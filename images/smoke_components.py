"""Run three of kubetune's components inside an image as a KFP pod runs them: kfp.local starts each one as its own
process with the component's compiled command (``python3 -m kfp.dsl.executor_main`` on an executor input), and the
tasks pass artifacts to each other as the finetune pipeline does.

    python3 smoke_components.py WORKDIR

1. validate-kwargs: the embedded lora_sft spec against the tiny model (kwargs artifact, memory plan);
2. prepare-data: the bundled sample chats, tokenized with the tiny model's chat template, split train/validation;
3. export-model: the tiny model as a trained ``final`` checkpoint, exported with its model card and checksum manifest.

Prints one line per task with its key outputs; exits non-zero when a task fails or an output is missing.
images/build-local.sh runs it in the runtime image it builds (``buildah run``).
"""

import json
import sys
import time
from pathlib import Path

from kfp import dsl, local

from kubetune.components.export.component import export_model
from kubetune.components.prepare.component import prepare_data
from kubetune.components.validate_spec.component import validate_kwargs
from kubetune.embedded.tiny_model import write_tiny_model
from kubetune.pipelines.parameters import EMBEDDED_KWARGS
from kubetune.runtime import SAMPLE_DATA_URI, TINY_MODEL_URI
from kubetune.steps.export import verify


@dsl.pipeline
def three_components(trained: str):
    spec = validate_kwargs(algorithm="lora_sft", training_kwargs=EMBEDDED_KWARGS, model_uri=TINY_MODEL_URI)
    kwargs_artifact = spec.outputs["kwargs_artifact"]
    prepare_data(data_uri=SAMPLE_DATA_URI, model_uri=TINY_MODEL_URI, kwargs_artifact=kwargs_artifact)
    model = dsl.importer(artifact_uri=trained, artifact_class=dsl.Model).output
    export_model(trained_model=model, checkpoint="final", kwargs_artifact=kwargs_artifact, model_uri=TINY_MODEL_URI)


def outputs(task: Path) -> dict:
    """The executor's output of one task: its artifacts' metadata, by output name."""
    written = json.loads((task / "executor_output.json").read_text())["artifacts"]
    return {name: value["artifacts"][0].get("metadata", {}) for name, value in written.items()}


def main(workdir: Path) -> None:
    write_tiny_model(workdir / "trained" / "final")
    root = workdir / "pipeline-root"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    started = time.monotonic()
    three_components(trained=str(workdir / "trained"))
    (run,) = root.iterdir()
    spec = json.loads((run / "validate-kwargs" / "kwargs_artifact").read_text())
    plan = outputs(run / "validate-kwargs")["memory_metrics"]["memory_total_gib"]
    print(f"validate-kwargs: {spec['algorithm']} on {spec['backend']}, memory plan {plan} GiB per GPU")
    data = outputs(run / "prepare-data")
    print(f"prepare-data: train {data['train_data']}, validation {data['validation_data']}")
    exported = run / "export-model" / "exported_model"
    problems = verify(exported)
    print(f"export-model: {len(list(exported.iterdir()))} files, verify: {problems or 'complete and intact'}")
    print(f"three components in {time.monotonic() - started:.0f} s")
    if problems:
        sys.exit(1)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
