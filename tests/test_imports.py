"""Every library module imports on its own, first thing in a fresh interpreter: an import circle shows up here
as an ImportError (a partially initialised module), whatever order other tests happened to import things in.
The command lines load no heavy package (torch, kfp, boto3, ...) before a command needs it."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# modules that import a backend package at import time (mini-trainer's callback base class)
NEEDS_BACKEND = {"kubetune.backends.mini_trainer_validation"}
MODULES = sorted(
    ".".join(path.relative_to(ROOT).with_suffix("").parts)
    for path in (ROOT / "kubetune").rglob("*.py")
    if path.name not in ("__init__.py", "__main__.py") and "cpu_site" not in path.parts  # cpu_site: a sitecustomize
)
# what a command line must not load before a command needs it: `kubetune --help` and a node's start stay quick
HEAVY = ("torch", "transformers", "trl", "peft", "datasets", "kfp", "boto3", "kubernetes")


@pytest.mark.parametrize("module", [m for m in MODULES if m not in NEEDS_BACKEND])
def test_each_library_module_imports_alone(module):
    done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("module", ["kubetune.cli", "kubetune.cluster.node_cli"])
def test_a_command_line_loads_no_heavy_package_before_a_command_runs(module):
    code = f"import sys, {module}; print(sorted(name for name in {HEAVY!r} if name in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert (done.returncode, done.stdout.strip()) == (0, "[]"), done.stderr
