"""Every Python package folder is declared in pyproject.toml (components/ and pipelines/ are remapped)."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAPPING = {"kubetune": "kubetune", "components": "kubetune.components", "pipelines": "kubetune.pipelines"}


def test_all_packages_are_declared():
    declared = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = set()
    for top, name in MAPPING.items():
        for init in (ROOT / top).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT / top).parts
            found.add(".".join((name, *parts)))
    assert found == declared


def test_the_wheel_ships_the_leaves_inside_kubetune_and_no_test_helpers(tmp_path):
    """Built for real (setuptools, no network) from a copy of the sources (no stale build/ folder can hide
    anything): components/ and pipelines/ land under kubetune/, tests (tests/, components/*/tests/) nowhere."""
    import shutil
    import subprocess
    import sys
    import zipfile

    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for name in ("kubetune", "components", "pipelines", "tests"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(source)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("kubetune-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "kubetune/components/train/component.py" in names
    assert "kubetune/pipelines/finetune.py" in names
    assert "kubetune/steps/train.py" in names
    assert not [n for n in names if n.startswith("tests/") or "/test_" in n or "standins" in n or "conftest" in n]
    assert not [n for n in names if "readme" in n.lower() and n.endswith(".py")]  # the README generator is a dev tool
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    scripts = zipfile.ZipFile(wheel).read(entry_points).decode().split("[console_scripts]")[1].split()
    assert scripts == ["kubetune", "=", "kubetune.cli:app", "kubetune-node", "=", "kubetune.cluster.node_cli:app"]
    assert "kubetune/cli/__main__.py" in names  # python -m kubetune.cli
