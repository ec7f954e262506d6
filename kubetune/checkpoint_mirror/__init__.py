"""Checkpoints that survive pre-emption without a shared volume: ``checkpoint_storage="s3://bucket/prefix"``.

Training Hub's meaning and layout: every save in the backend's output (``ckpt_output_dir``) is mirrored to
``<uri>/<its path relative to the output>/...`` and an ``.upload_complete`` marker is written last; only marked
prefixes are ever restored. kubetune's marker is JSON naming kubetune as writer with the save's files, sizes and
SHA-256 and the run it belongs to (a restore checks both; a marker kubetune did not write is never restored,
replaced or pruned, and refused at the probe).

- ``layout``: the saves (TRL ``checkpoint-N``, mini-trainer ``full_state_checkpoints/step_N``, instructlab-training
  ``full_state/epoch_N``, ``hf_format/*``) and which are complete; ``identity``: what makes a mirror one run's;
  ``remote``: the S3 side and the probe; ``upload``: mirroring while training and the last pass; ``restore``: before
  training; ``retention``: pruning.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kubetune.checkpoint_mirror.identity import run_identity
from kubetune.checkpoint_mirror.layout import MARKER, complete_saves
from kubetune.checkpoint_mirror.remote import Say
from kubetune.checkpoint_mirror.restore import RESTORING, Restores
from kubetune.checkpoint_mirror.retention import DEFAULT_RETENTION, check_retention
from kubetune.checkpoint_mirror.upload import Uploads
from kubetune.console import say

__all__ = ["DEFAULT_RETENTION", "MARKER", "RESTORING", "Mirror", "complete_saves", "mirrored", "run_identity", "storage_uri"]


class Mirror(Uploads, Restores):
    """The mirror of one training output (``root``: the backend's ``ckpt_output_dir``) at ``uri``."""


def storage_uri(spec_params: dict[str, Any]) -> str | None:
    """The ``s3://`` mirror a spec asks for, else None (``"pvc"``, left out)."""
    value = spec_params.get("checkpoint_storage")
    return value if isinstance(value, str) and value.startswith("s3://") else None


@contextmanager
def mirrored(
    uri: str | None,
    root: Path,
    algorithm: str,
    retention: int = DEFAULT_RETENTION,
    say: Say = say,
    run: dict[str, str] | None = None,
) -> Iterator[None]:
    """Around a backend's training: probe access, restore, mirror while it trains, then a last synchronous pass
    (errors raised); on a failure of training, the last pass is best effort and the failure goes on. ``run``: this
    run's identity (``run_identity``): a mirror of another run is refused, not resumed."""
    check_retention(retention)
    if uri is None:
        yield
        return
    mirror = Mirror(uri, root, retention, say, run)
    root.mkdir(parents=True, exist_ok=True)
    mirror.check_access()
    mirror.restore(algorithm)
    mirror.start()
    try:
        yield
    except BaseException:
        mirror.finish(raising=False)
        raise
    mirror.finish()
