"""Every library module imports on its own, first thing in a fresh interpreter: an import circle shows up here
as an ImportError (a partially initialised module), whatever order other tests happened to import things in."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# modules that import a backend package at import time (mini-trainer's callback base class)
NEEDS_BACKEND = {"kubetune.backends.mini_trainer_validation"}
MODULES = sorted(
    ".".join(path.relative_to(ROOT).with_suffix("").parts)
    for folder in ("kubetune/backends", "kubetune/contract", "kubetune/data")
    for path in (ROOT / folder).glob("*.py")
    if path.name != "__init__.py"
)


@pytest.mark.parametrize("module", [m for m in MODULES if m not in NEEDS_BACKEND])
def test_each_library_module_imports_alone(module):
    done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr.strip().splitlines()[-1]
