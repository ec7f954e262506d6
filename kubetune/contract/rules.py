"""Rules every algorithm shares, on curated parameters (the backends' own rules live in ``kubetune/backends``)."""

from __future__ import annotations

from typing import Any

from kubetune.errors import Problem


def checkpoint_problems(params: dict[str, Any], kwargs: dict[str, Any]) -> list[Problem]:
    """Training Hub's checkpointing switches (every algorithm): ``checkpoint_storage`` mirrors to ``s3://`` only
    (kubetune has no GCS layer) and under a prefix, never a bucket root, and ``enable_jit_checkpoint`` must not
    contradict the backend's own ``on_demand_checkpointing``."""
    problems = []
    if str(params.get("checkpoint_storage") or "").startswith("gs://"):
        problems.append(
            Problem(
                "checkpoint_storage",
                "is gs://, which kubetune cannot mirror to: it has no GCS layer",
                "give an s3://bucket/prefix URI (GCS's S3-compatible endpoint with HMAC keys works through "
                "AWS_ENDPOINT_URL_S3), or leave it out",
            )
        )
    storage = str(params.get("checkpoint_storage") or "")
    if storage.startswith("s3://") and not storage[len("s3://") :].partition("/")[2].strip("/"):
        problems.append(
            Problem(
                "checkpoint_storage",
                "is a bucket root: a mirror's retention prunes what lies under its prefix",
                "give the run a prefix of its own: s3://bucket/run-name",
            )
        )
    jit, native = params.get("enable_jit_checkpoint"), kwargs.get("on_demand_checkpointing")
    if isinstance(native, bool) and jit is not None and jit != native:
        problems.append(
            Problem("on_demand_checkpointing", f"contradicts enable_jit_checkpoint ({str(jit).lower()})", "give one of them")
        )
    return problems
