"""The shipped catalogue snapshots match the installed backends' own classes."""

import importlib.util
import json

import pytest

from kubetune.contract.catalog import BACKEND_CLASSES, catalog, installed_versions, load_snapshot, read_live, snapshot_path

IMPORT_NAMES = {"instructlab-training": "instructlab.training", "mini-trainer": "mini_trainer", "trl": "trl"}


def _installed(backend: str) -> bool:
    try:
        return importlib.util.find_spec(IMPORT_NAMES[backend]) is not None
    except ModuleNotFoundError:
        return False


@pytest.mark.parametrize("backend", sorted(BACKEND_CLASSES))
def test_snapshot_matches_installed_backend(backend):
    if not _installed(backend):
        pytest.skip(f"{backend} is not installed here; the snapshot is what validation uses")
    live = read_live(backend)
    snapshot = json.loads(snapshot_path(backend).read_text())
    assert live.versions == snapshot["versions"], (
        f"installed {backend} {live.versions} differs from the snapshot's {snapshot['versions']}: "
        "run `python -m kubetune.contract.catalog` and review the diff"
    )
    assert json.loads(json.dumps(live.to_json(), sort_keys=True)) == snapshot


@pytest.mark.parametrize("backend", sorted(BACKEND_CLASSES))
def test_catalog_uses_snapshot_when_versions_match(backend):
    if installed_versions(backend) == load_snapshot(backend).versions:
        assert catalog(backend).origin == "snapshot"


def test_catalog_holds_the_documented_fields():
    mini = load_snapshot("mini-trainer").fields
    assert mini["training_mode"].choices == ("epoch", "step", "token", "infinite")
    assert mini["osft"].default is False and mini["validation_split"].types == ("number",)
    trl = load_snapshot("trl").fields
    assert {"eval_steps", "eval_strategy", "packing", "max_length", "r", "use_rslora"} <= set(trl)
    assert "max_seq_length" not in trl  # renamed to max_length in TRL 1.x
    ilab = load_snapshot("instructlab-training").fields
    assert {"max_batch_len", "validation_split", "nproc_per_node"} <= set(ilab)
    assert ilab["nproc_per_node"].accepts("gpu") and ilab["nproc_per_node"].accepts(4)
    assert not ilab["nproc_per_node"].accepts("auto")
