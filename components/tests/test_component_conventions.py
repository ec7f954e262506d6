"""The kubeflow/pipelines-components conventions, for every component folder: ``component.py`` importing only the
standard library and ``kfp`` at module level, ``metadata.yaml``, a README generated from the component's docstring
(hand-written text below the marker), and tests beside it."""

import ast
import datetime
import re
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.support.component_readmes import MARKER, components_of, folders, render

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = folders(ROOT / "components")
ALLOWED = set(sys.stdlib_module_names) | {"kfp", "__future__"}
REGENERATE = "run `python -m tests.support.component_readmes` to regenerate the READMEs"


def test_there_are_component_folders():
    expected = {"validate_spec", "prepare", "train", "evaluate", "benchmark", "gate", "export", "register"}
    assert {f.name for f in FOLDERS} == expected


def module_level_imports(tree: ast.AST):
    """Imports that run when the module is imported: everything outside function bodies."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            yield "." * node.level + (node.module or "")
        elif not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            yield from module_level_imports(node)


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda f: f.name)
def test_a_component_module_imports_only_the_standard_library_and_kfp(folder):
    tree = ast.parse((folder / "component.py").read_text(encoding="utf-8"))
    imported = list(module_level_imports(tree))
    assert "kfp" in {name.split(".")[0] for name in imported}
    assert not [name for name in imported if name.split(".")[0] not in ALLOWED]


def test_the_import_check_sees_an_import_anywhere_at_module_level():
    tree = ast.parse("import os\nif True:\n    from kubetune import runtime\ndef f():\n    import torch\n")
    assert list(module_level_imports(tree)) == ["os", "kubetune"]


def image_defaults(folder: Path) -> dict[str, tuple[str, str]]:
    """``NAME = os.environ.get("VARIABLE", "default")`` assignments of ``component.py``: name -> (variable, default)."""
    found = {}
    for node in ast.parse((folder / "component.py").read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) and ast.unparse(node.value.func) == "os.environ.get":
            variable, default = (arg.value for arg in node.value.args)
            found[node.targets[0].id] = (variable, default)
    return found


def test_component_images_are_kubetune_runtimes_images_and_follow_the_same_environment(monkeypatch):
    import importlib

    import kubetune.runtime

    for variable in ("KUBETUNE_RUNTIME_IMAGE", "KUBETUNE_TRAINING_IMAGE"):
        monkeypatch.delenv(variable, raising=False)
    runtime = importlib.reload(kubetune.runtime)
    expected = {
        "RUNTIME_IMAGE": ("KUBETUNE_RUNTIME_IMAGE", runtime.RUNTIME_IMAGE),
        "TRAINING_IMAGE": ("KUBETUNE_TRAINING_IMAGE", runtime.TRAINING_IMAGE),
    }
    for folder in FOLDERS:
        defaults = image_defaults(folder)
        assert defaults and all(defaults[name] == expected[name] for name in defaults), folder.name
        for component in components_of(folder):
            image = component.component_spec.implementation.container.image
            assert image in {default for _, default in defaults.values()}, component.name


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda f: f.name)
def test_a_component_folder_has_metadata_a_readme_and_its_tests(folder):
    assert (folder / "__init__.py").is_file() and (folder / "README.md").is_file()
    assert list((folder / "tests").glob("test_*.py")), f"{folder.name}: no tests beside the component"
    metadata = yaml.safe_load((folder / "metadata.yaml").read_text(encoding="utf-8"))
    assert metadata["name"] == folder.name and metadata["tier"] in ("core", "third_party")
    assert metadata["stability"] in ("alpha", "beta", "stable")
    assert metadata["tags"] and all(isinstance(t, str) for t in metadata["tags"])
    verified = metadata["lastVerified"]
    assert isinstance(verified, datetime.datetime) and verified <= datetime.datetime.now(datetime.UTC)
    text = (folder / "metadata.yaml").read_text(encoding="utf-8")
    assert "tests last passed against the KFP SDK" in text and "not a run on a Kubeflow cluster" in text  # what it claims
    kubeflow = {d["name"] for d in metadata["dependencies"]["kubeflow"]}
    assert "Pipelines" in kubeflow and ("Trainer" in kubeflow) == (folder.name == "train")  # train_on_trainjob


# the Kubeflow dependency of a metadata.yaml -> the package of pyproject.toml whose requirement it repeats
KUBEFLOW_PACKAGES = {"Pipelines": "kfp", "Trainer": "kubeflow-trainer-api", "Model Registry": "model-registry"}


def required_versions(pyproject: dict) -> dict[str, str]:
    """package -> its lower bound as pyproject requires it (``>=2.14``), from the dependencies and the extras."""
    project = pyproject["project"]
    requirements = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]
    return {m.group(1): m.group(2) for r in requirements if (m := re.match(r"([A-Za-z0-9_.-]+)\s*(>=[\d.]+)", r))}


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda f: f.name)
def test_metadata_dependency_versions_are_the_ones_pyproject_requires(folder):
    required = required_versions(tomllib.loads((ROOT / "pyproject.toml").read_text()))
    metadata = yaml.safe_load((folder / "metadata.yaml").read_text(encoding="utf-8"))
    declared = {d["name"]: d["version"] for d in metadata["dependencies"]["kubeflow"]}
    assert {name: required[KUBEFLOW_PACKAGES[name]] for name in declared} == declared


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda f: f.name)
def test_every_input_and_output_is_documented_in_the_docstring(folder):
    for component in components_of(folder):
        readme = render(folder).partition(MARKER)[0]
        section = readme.partition(f"## `{component.python_func.__name__}`")[2].split("\n## ")[0]
        rows = [line for line in section.splitlines() if line.startswith("| `")]
        assert rows and not [row for row in rows if row.endswith("|  |")], f"{component.name}: undocumented {rows}"


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda f: f.name)
def test_the_readme_is_generated_from_the_component_and_its_metadata(folder):
    committed = (folder / "README.md").read_text(encoding="utf-8")
    assert committed.count(MARKER) == 1, f"{folder.name}/README.md: no hand-written part below {MARKER}"
    assert committed == render(folder), f"{folder.name}/README.md is out of date: {REGENERATE}"


def test_the_generator_keeps_the_hand_written_text_and_follows_the_docstring(tmp_path, monkeypatch):
    import shutil

    from tests.support import component_readmes as readme

    folder = tmp_path / "components" / "evaluate"
    shutil.copytree(ROOT / "components" / "evaluate", folder, ignore=shutil.ignore_patterns("tests", "__pycache__"))
    (folder / "README.md").write_text(f"stale generated text\n{MARKER}\nmine, kept\n")
    text = render(folder)
    assert text.endswith(f"{MARKER}\n\nmine, kept\n") and "stale" not in text
    assert "| `patience` | int | `2` | Rises of validation loss in a row that mark overfitting. |" in text
    monkeypatch.setattr(readme, "COMPONENTS", tmp_path / "components")
    assert readme.main() == 0 and (folder / "README.md").read_text() == text
