"""The CUDA images take torch from their base image and never replace it: images/base_constraints.py turns the base's
own installed packages into constraints, and pip then installs the image's extras around the base's torch.

The base here is a stand-in for the default base (docker.io/pytorch/pytorch:2.11.0-cuda13.0-cudnn9-devel): a virtual
environment whose installed packages are torch 2.11.0 and an fsspec newer than datasets 4.8.5 allows, as metadata only
(a dist-info folder each, torch's requirements copied from this machine's torch). pip's dry run reads installed
packages from their metadata, so it resolves against the base's torch without its wheel.
"""

import json
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "images" / "base_constraints.py"
TORCH = "2.11.0"  # the default base image's torch
FSSPEC = "2026.9.0"  # newer than datasets 4.8.5 allows (<=2026.2.0)
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def run(python: str | Path, *constraints: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), str(SCRIPT), *map(str, constraints)], capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A virtual environment holding torch 2.11.0 and fsspec 2026.9.0 as installed metadata, nothing else: its python."""
    venv = tmp_path_factory.mktemp("base") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    (site,) = venv.glob("lib/python*/site-packages")
    requires = [f"Requires-Dist: {line}" for line in metadata.requires("torch") or []]
    for name, version, lines in (("torch", TORCH, requires), ("fsspec", FSSPEC, [])):
        info = site / f"{name}-{version}.dist-info"
        info.mkdir()
        header = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
        (info / "METADATA").write_text("\n".join([*header, *lines]) + "\n")
        (info / "INSTALLER").write_text("pip\n")
        (info / "RECORD").write_text("")
    return venv / "bin" / "python"


def test_the_bases_packages_become_constraints_except_those_we_pin(tmp_path, base):
    ours = tmp_path / "ours.txt"
    ours.write_text("# ours\ntransformers==5.17.0\nnumpy==2.4.6  # pinned\n")
    lines = run(sys.executable, ours).stdout.splitlines()  # the project's environment as a base with many packages
    assert f"torch=={metadata.version('torch')}" in lines and any(line.startswith("safetensors==") for line in lines)
    assert not [line for line in lines if line.startswith(("transformers==", "numpy=="))]
    assert run(base, ours).stdout == f"fsspec=={FSSPEC}\ntorch=={TORCH}\n"  # the stand-in base's two packages


def test_a_constraints_file_that_pins_the_bases_torch_stack_is_refused(tmp_path):
    ours = tmp_path / "ours.txt"
    ours.write_text("accelerate==1.15.0\ntorch==2.12.0\nnvidia-nccl-cu13==2.28.3\n")
    result = run(sys.executable, ours)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == f"base_constraints: {ours} pins nvidia-nccl-cu13, torch: these come from the base image\n"


@pytest.mark.parametrize("constraints", ["cuda-constraints.txt", "unsloth-constraints.txt"])
def test_the_images_constraints_pin_nothing_the_base_provides(constraints):
    result = run(sys.executable, ROOT / "images" / constraints)
    assert result.returncode == 0, result.stderr


@pytest.mark.slow  # pip resolves ~130 packages from the indexes: about 80-110 s each, mostly waiting on the network
@pytest.mark.parametrize(
    ("image", "ours"),
    [("cuda", {"instructlab-training", "rhai-innovation-mini-trainer", "trl", "peft", "liger-kernel"}),
     ("unsloth", {"unsloth", "unsloth-zoo", "trl", "peft", "datasets"})],
)
def test_a_dry_run_install_of_the_cuda_images_extras_leaves_the_bases_torch_alone(tmp_path, base, image, ours):
    """What images/Containerfile.IMAGE runs, as a dry run in the stand-in base: the extras' requirements (their
    metadata, without building the project) with the base's constraints and the image's pins. The base's fsspec is
    newer than Unsloth's datasets allows: the image's own pin must win over the base's."""
    constraints = ROOT / "images" / f"{image}-constraints.txt"
    steps = re.sub(r"\\\n", " ", (ROOT / "images" / f"Containerfile.{image}").read_text())
    (extras, more) = re.findall(r'"\.\[([a-z0-9_,-]+)\]"((?:[ \t]+[a-z0-9_.=-]+)*)\s*(?:&&|\n)', steps)[0]
    requirements = list(PROJECT["dependencies"]) + more.split()
    for extra in extras.split(","):
        requirements += PROJECT["optional-dependencies"][extra]
    (tmp_path / "requirements.txt").write_text("\n".join(requirements))
    (tmp_path / "base-constraints.txt").write_text(run(base, constraints).stdout)
    pip = [sys.executable, "-m", "pip", "--python", str(base), "install", "--dry-run", "--quiet", "--report"]
    command = [*pip, str(tmp_path / "report.json"), "-c", str(tmp_path / "base-constraints.txt")]
    command += ["-c", str(constraints), "-r", str(tmp_path / "requirements.txt")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    installs = {canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"] for i in report["install"]}
    assert "torch" not in installs, installs["torch"]  # the base's torch stays
    assert ours <= set(installs)
