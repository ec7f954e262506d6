"""The layers hold: `lint-imports` (import-linter, contracts in pyproject.toml) on the package laid out as the
wheel lays it out, components/ and pipelines/ included (they ship as kubetune.components and kubetune.pipelines)."""

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def shipped_layout(into: Path) -> Path:
    """The source folders copied to where pyproject's package-dir table installs them."""
    package_dir = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    for package, folder in sorted(package_dir.items()):  # "kubetune" before "kubetune.components"
        shutil.copytree(ROOT / folder, into / package.replace(".", "/"), ignore=shutil.ignore_patterns("test_*", "__pycache__"))
    return into


def lint(layout: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", str(ROOT / "pyproject.toml")],
        cwd=layout,
        env={"PYTHONPATH": str(layout), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_import_contracts_hold_on_the_shipped_layout(tmp_path):
    result = lint(shipped_layout(tmp_path))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout
    assert (tmp_path / "kubetune/components/train/component.py").exists()  # the leaves were checked too


@pytest.mark.parametrize(
    ("module", "planted", "caught"),
    [
        ("kubetune/steps/train.py", "import kubetune.components.train.component", "kubetune.steps is not allowed to import"),
        ("kubetune/contract/spec.py", "import kubetune.backends.registry", "kubetune.contract is not allowed to import"),
        ("kubetune/steps/manifest.py", "import kubetune.steps.export", "No cycles are allowed in kubetune.steps"),
    ],
)
def test_an_upward_import_or_a_circle_is_caught(tmp_path, module, planted, caught):
    layout = shipped_layout(tmp_path)
    with (layout / module).open("a") as f:
        f.write(f"\n\ndef _planted():\n    {planted}\n")  # a function-level import counts too
    result = lint(layout)
    assert result.returncode != 0
    assert caught in result.stdout


def test_a_new_top_level_module_must_be_given_a_layer(tmp_path):
    layout = shipped_layout(tmp_path)
    (layout / "kubetune" / "helpers.py").write_text('"""A module nobody placed."""\n')
    result = lint(layout)
    assert result.returncode != 0
    assert "kubetune.helpers" in result.stdout
