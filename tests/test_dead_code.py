"""No dead code in what ships: `vulture` over kubetune/, components/ and pipelines/ finds nothing unused.

A name only a framework uses (a typer command, a pydantic validator, a callback) goes in
tests/support/vulture_whitelist.py with the reason; anything else vulture finds is deleted. The Training Hub
parameters (kubetune/contract/params.py) are pydantic fields read by name, never as attributes: their names are
whitelisted from the models themselves, and nothing else in that module is.
"""

import shutil
import subprocess
import sys
from pathlib import Path

from pydantic import BaseModel

from kubetune.contract import params

ROOT = Path(__file__).resolve().parents[1]
VULTURE = Path(sys.executable).with_name("vulture")
SHIPPED = ["kubetune", "components", "pipelines"]
OPTIONS = [
    "--min-confidence", "60",  # unused functions, classes, attributes and variables too, not only imports
    "--exclude", "*/tests/test_*.py",
    "--ignore-names", "model_config",  # pydantic's settings
]  # fmt: skip


def parameter_fields(folder: Path) -> Path:
    """A vulture whitelist of the fields of the pydantic models in kubetune/contract/params.py."""
    models = [m for m in vars(params).values() if isinstance(m, type) and issubclass(m, BaseModel)]
    names = sorted({name for model in models if model.__module__ == params.__name__ for name in model.model_fields})
    whitelist = folder / "parameter_fields.py"
    whitelist.write_text("".join(f"_.{name}\n" for name in names))
    return whitelist


def vulture(folder: Path, *paths: str | Path) -> subprocess.CompletedProcess:
    whitelists = [ROOT / "tests/support/vulture_whitelist.py", parameter_fields(folder)]
    command = [str(VULTURE), *map(str, paths), *map(str, whitelists), *OPTIONS]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_nothing_shipped_is_dead(tmp_path):
    result = vulture(tmp_path, *SHIPPED)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_new_unused_function_is_caught(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text("def used():\n    return 1\n\n\ndef forgotten():\n    return used()\n")
    result = vulture(tmp_path, *SHIPPED, planted)
    assert result.returncode == 3
    assert result.stdout.splitlines() == [f"{planted}:5: unused function 'forgotten' (60% confidence)"]


def test_a_constant_beside_the_parameters_is_caught(tmp_path):
    shipped = tmp_path / "kubetune"
    shutil.copytree(ROOT / "kubetune", shipped, ignore=shutil.ignore_patterns("__pycache__"))
    module = shipped / "contract" / "params.py"
    module.write_text(module.read_text() + 'LEFT_OVER = {"sft": "SFTParams"}\n')
    result = vulture(tmp_path, shipped, "components", "pipelines")
    line = len(module.read_text().splitlines())
    assert result.returncode == 3
    assert result.stdout.splitlines() == [f"{module}:{line}: unused variable 'LEFT_OVER' (60% confidence)"]
