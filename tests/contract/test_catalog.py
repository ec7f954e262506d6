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


@pytest.mark.parametrize("backend", sorted(BACKEND_CLASSES))
def test_ranges_name_real_fields(backend):
    from kubetune.contract.catalog import RANGES

    assert set(RANGES[backend]) <= set(load_snapshot(backend).fields)


def test_report_to_takes_transformers_integrations():
    choices = load_snapshot("trl").fields["report_to"].item_choices
    assert {"wandb", "mlflow", "tensorboard", "none", "all"} <= set(choices)


def test_sft_and_osft_validation_builds_their_configs_without_importing_torch():
    import ast
    import subprocess
    import sys

    code = (
        "import sys; from kubetune.validation import validate_spec;"
        "validate_spec({'algorithm': 'sft', 'max_seq_len': 8, 'effective_batch_size': 2, 'learning_rate': 1e-5,"
        " 'fsdp_options': {'cpu_offload_params': True}}, require_paths=False);"
        "validate_spec({'algorithm': 'osft', 'max_seq_len': 8, 'max_tokens_per_gpu': 8, 'effective_batch_size': 2,"
        " 'learning_rate': 1e-5, 'unfreeze_rank_ratio': 0.5, 'osft_upcast_dtype': 'float32'}, require_paths=False);"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'mini_trainer')"
        " or m.startswith('instructlab.training') or m.startswith('_kubetune_config')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = set(ast.literal_eval(out))
    if _installed("mini-trainer") and _installed("instructlab-training"):
        assert loaded == {"_kubetune_config.mini_trainer.training_types", "_kubetune_config.instructlab.training.config"}
    assert not {m for m in loaded if not m.startswith("_kubetune_config")}
