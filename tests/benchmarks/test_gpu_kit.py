"""The GPU proof kit's parts that run without a GPU: its wheel check, its pins, and the skipping of ``gpu`` tests."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _kit():
    spec = importlib.util.spec_from_file_location("_gpu_kit", ROOT / "benchmarks" / "gpu_kit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _wheel(folder: Path, name: str, version: str, requires: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{version}-py3-none-any.whl"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(f"Requires-Dist: {r}\n" for r in requires)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{name}-{version}.dist-info/METADATA", metadata)
    return path


def test_the_wheel_check_names_what_nothing_provides_and_every_version_conflict(tmp_path):
    kit = _kit()
    wheels = {
        ("1", "core"): [
            _wheel(tmp_path / "core", "alpha", "1.0", ["beta>=2", "gamma", "torch>=2.12", "numpy", "d; sys_platform == 'win32'"]),
            _wheel(tmp_path / "core", "beta", "1.5", ["torch>=2.4"]),
        ],
        ("1", "unsloth"): [_wheel(tmp_path / "unsloth", "epsilon", "3.0", ["beta<1.5", "alpha==1.0"])],
    }
    assert kit.unmet(wheels) == [
        "core: alpha needs beta>=2, the environment has 1.5",
        "core: alpha needs gamma, which nothing provides",
        "core: alpha needs torch>=2.12, the environment has 2.11.0",
        "unsloth: epsilon needs beta<1.5, the environment has 1.5",
    ]


def test_the_kit_carries_the_backend_versions_the_project_pins():
    kit = _kit()
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    carried = {pin for pins in kit.WHEELS.values() for pin in pins}
    for extra in ("sft", "osft"):
        assert set(extras[extra]) <= carried, extra
    assert "unsloth==2026.10.9" in carried


def test_the_training_path_never_imports_what_the_kit_leaves_out():
    """The kit does not carry kubetune's KFP requirements: preparing, training and evaluating must not import them."""
    blocked = ["kfp", "kfp.kubernetes", "kfp_server_api", "boto3", "moto"]
    assert set(_kit().NOT_NEEDED) == {"kfp", "kfp-kubernetes"}
    code = (
        f"import sys\nfor m in {blocked!r}: sys.modules[m] = None\n"
        "import kubetune.steps.train, kubetune.steps.evaluate, kubetune.steps.prepare\n"
        "from kubetune.backends.registry import get_backend\n"
        "[get_backend(a) for a in ('sft', 'osft', 'lora_sft')]\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_gpu_tests_are_skipped_with_the_reason_where_cuda_is_absent():
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is present here: the gpu tests run instead of being skipped")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "0", "-m", "gpu", "-q", "-rs", "-p", "no:cacheprovider"]
        + ["tests/backends/test_gpu.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:]
    assert "passed" not in done.stdout and "failed" not in done.stdout
    assert done.stdout.count("needs a CUDA GPU (none here)") >= 2, done.stdout[-2000:]
