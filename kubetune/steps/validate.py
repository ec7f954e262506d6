"""Kwargs validation step: the user's spec becomes the normalized kwargs artifact, or the run stops here.

The step is ``validate_spec`` itself (the code ``kubetune validate`` runs), so a document gets one verdict
everywhere. KFP carries a dict parameter as a protobuf Struct, where every number is a double (5 -> 5.0);
``validate_spec`` reads an integral number as an integer whatever its spelling, as JSON does.

Then the memory plan (``kubetune.memory``, what ``kubetune plan`` prints): written as Markdown, and a spec that
does not fit the GPUs' memory stops here, before data preparation and training, and before its artifact is written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubetune.contract import TrainingSpec
from kubetune.errors import Failure, KubetuneError, Problem
from kubetune.files import write_text_atomic
from kubetune.secrets import scan_text
from kubetune.validation import validate_spec


def validate_to_artifact(
    algorithm: str,
    training_kwargs: dict[str, Any],
    output_path: str | Path,
    before_writing: Callable[[TrainingSpec], object] | None = None,
) -> TrainingSpec:
    """Validate ``training_kwargs`` for ``algorithm`` and write the artifact (paths are bound at train time).
    ``before_writing``: called with the validated spec first (the memory plan, which may refuse it)."""
    if not isinstance(training_kwargs, dict):
        raise KubetuneError([Problem("training_kwargs", "must be a JSON object")], "invalid spec")
    document = dict(training_kwargs)
    if document.setdefault("algorithm", algorithm) != algorithm:
        raise KubetuneError(
            [Problem("algorithm", "the kwargs name another algorithm than the pipeline's `algorithm` parameter")], "invalid spec"
        )
    spec = validate_spec(document, require_paths=False)
    if before_writing:
        before_writing(spec)
    text = spec.to_json()
    shapes = scan_text(text)
    if shapes:  # validation refuses credentials; this guard keeps one from ever reaching the artifact
        raise KubetuneError([Problem("kwargs artifact", f"would hold what looks like a credential ({', '.join(shapes)})")])
    write_text_atomic(output_path, text)
    return spec


@dataclass(frozen=True)
class Placement:
    """Where the spec will train, as the pipeline's parameters say: the model and the GPUs."""

    model_uri: str
    gpus: int = 1
    nnodes: int = 1
    gpu_memory_gib: float = 0.0  # 0: from accelerator_type or the node selector's GPU product, else no verdict
    accelerator_type: str = ""
    node_selector: dict[str, Any] | None = None


def plan_to_markdown(spec: TrainingSpec, placement: Placement, markdown_path: str | Path) -> dict[str, float]:
    """Write the memory plan of ``spec`` at ``placement`` and return its metrics (GiB); raise the one-line refusal
    when it exceeds the GPU's memory. A model whose config.json is not reachable here: the plan says so, no verdict."""
    from kubetune.memory.verdict import plan_spec

    p = placement
    if not (isinstance(p.gpu_memory_gib, int | float) and 0 <= p.gpu_memory_gib < float("inf")):  # NaN too
        raise Failure("gpu_memory_gib", f"is {p.gpu_memory_gib}: give the GiB of one GPU, or 0 to derive them")
    if not p.model_uri:
        write_text_atomic(markdown_path, "### Memory plan\n\nSkipped: no model_uri given.\n")
        return {}
    verdict = plan_spec(spec, p.model_uri, p.gpus, p.nnodes, p.gpu_memory_gib or None, p.accelerator_type, p.node_selector)
    write_text_atomic(markdown_path, verdict.markdown)
    print(verdict.markdown)
    verdict.refuse()
    metrics = verdict.plan.metrics() if verdict.plan else {}
    return {**metrics, **({"memory_gpu_gib": verdict.gpu_memory_gib} if verdict.gpu_memory_gib else {})}
