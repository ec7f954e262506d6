"""kfp.local, able to run kubetune's pipelines: ``init`` is ``kfp.local.init`` with the patch below applied.

kfp 2.17's local orchestrator resolves ``dsl.OneOf`` of *parameter* outputs (the one branch that ran), but not of
*artifact* outputs: ``OrchestratorUtils.get_dag_output_artifacts`` raises "Expected 1 artifact in
ArtifactSelectorSpec" for the selectors of a OneOf. The finetune pipeline's ``model`` output is one (the exported
model, or the promotion gate's refusal). The patch resolves it as kfp resolves a parameter OneOf: the output of the
one selector whose producer ran (a skipped ``dsl.If`` branch left nothing in the IOStore); a single selector is
read as kfp reads it. Examples that run a pipeline holding ``finetune`` locally call ``init`` instead of
``kfp.local.init``.

kfp 2.17's local ``dsl.If`` reads a task's output in a condition only when it is named ``Output``: the channel of a
named one (``pipelinechannel--kubetune-finetune-promoted``: finetune's ``promoted``) is taken for a parent input, not
found, and the branch is skipped with a warning. The second patch tries each task/output split of the channel first.

kfp.local's warnings that only say the run is local (a task's display name and accelerator are ignored; its base
image is not Python's) are not shown.
"""

from __future__ import annotations

import warnings
from typing import Any

LOCAL_ONLY_WARNINGS = (
    r"Task '.*': settings \[.*\] have no effect in the current local runner",
    r"You may be attemping to run a task that uses custom or non-Python base image",
)


def init(pipeline_root: str, **options: Any) -> None:
    """``kfp.local.init`` with the SubprocessRunner in this Python environment (``use_venv=False``) unless
    ``options`` give a runner, after patching kfp.local to resolve artifact OneOf outputs."""
    from kfp import local

    resolve_artifact_oneof()
    resolve_named_outputs_in_conditions()
    for message in LOCAL_ONLY_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    options.setdefault("runner", local.SubprocessRunner(use_venv=False))
    local.init(pipeline_root=pipeline_root, **options)


def resolve_artifact_oneof() -> None:
    """Patch kfp.local's DAG output resolution (idempotent)."""
    from kfp.local.orchestrator.orchestrator_utils import OrchestratorUtils

    if getattr(OrchestratorUtils.get_dag_output_artifacts, "kubetune", False):
        return

    def get_dag_output_artifacts(_cls, dag_outputs_spec, io_store) -> dict[str, Any]:
        outputs = {}
        for key, selector_spec in dag_outputs_spec.artifacts.items():
            found = []
            for selector in selector_spec.artifact_selectors:
                try:
                    found.append(io_store.get_task_output(selector.producer_subtask, selector.output_artifact_key))
                except ValueError:  # its branch did not run (with one selector, kfp's own error is kept)
                    if len(selector_spec.artifact_selectors) == 1:
                        raise
            if len(found) != 1:
                raise ValueError(f"'dsl.OneOf' output '{key}': {len(found)} of its branches produced it, expected exactly one")
            outputs[key] = found[0]
        return outputs

    get_dag_output_artifacts.kubetune = True  # type: ignore[attr-defined]
    OrchestratorUtils.get_dag_output_artifacts = classmethod(get_dag_output_artifacts)


def resolve_named_outputs_in_conditions() -> None:
    """Patch kfp.local's ``dsl.If`` condition channels to find a task's named output (idempotent)."""
    from kfp.local.orchestrator.enhanced_dag_orchestrator import ConditionEvaluator

    original = ConditionEvaluator._resolve_pipeline_channel
    if getattr(original, "kubetune", False):
        return

    def resolve(channel_ref: str, io_store: Any) -> Any:
        parts = channel_ref.removeprefix("pipelinechannel--").split("-")
        for cut in range(len(parts) - 1, 0, -1):  # task names hold dashes too: each split, the longest output first
            try:
                return io_store.get_task_output("-".join(parts[:cut]), "-".join(parts[cut:]))
            except ValueError:
                continue
        return original(channel_ref, io_store)

    resolve.kubetune = True  # type: ignore[attr-defined]
    ConditionEvaluator._resolve_pipeline_channel = staticmethod(resolve)
