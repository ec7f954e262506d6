"""No dead code in what ships: `vulture` over kubetune/, components/ and pipelines/ finds nothing unused.

A name only a framework uses (a typer command, a pydantic validator, a callback) goes in
tests/support/vulture_whitelist.py with the reason; anything else vulture finds is deleted.
"""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VULTURE = Path(sys.executable).with_name("vulture")
SHIPPED = ["kubetune", "components", "pipelines"]
OPTIONS = [
    "--min-confidence", "60",  # unused functions, classes, attributes and variables too, not only imports
    "--exclude", "*/tests/test_*.py,kubetune/contract/params.py",  # Training Hub parameters: fields read by name
    "--ignore-names", "model_config",  # pydantic's settings
]  # fmt: skip


def vulture(*paths: str | Path) -> subprocess.CompletedProcess:
    whitelist = ROOT / "tests/support/vulture_whitelist.py"
    command = [str(VULTURE), *map(str, paths), str(whitelist), *OPTIONS]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_nothing_shipped_is_dead():
    result = vulture(*SHIPPED)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_new_unused_function_is_caught(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text("def used():\n    return 1\n\n\ndef forgotten():\n    return used()\n")
    result = vulture(*SHIPPED, planted)
    assert result.returncode == 3
    assert result.stdout.splitlines() == [f"{planted}:5: unused function 'forgotten' (60% confidence)"]
