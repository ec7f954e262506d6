"""The kwargs artifact has one reader, ``TrainingSpec.read``: every step gets the typed spec from it, and a file
that is not an artifact is one line naming it. No module outside ``kubetune/contract`` parses the artifact itself,
and no step, launcher or component validates it again (the validation step did; binding paths is ``validation.bind``)."""

import ast
from pathlib import Path

import pytest

from kubetune.contract import TrainingSpec
from kubetune.errors import KubetuneError
from kubetune.validation import load_spec

ROOT = Path(__file__).parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.json"))
LOADERS = {"json.load", "json.loads", "orjson.loads"}
ARTIFACT_WORDS = ("kwargs", "spec", "artifact")


def raw_artifact_reads(root: Path = ROOT) -> list[str]:
    """``json.loads(<something named kwargs/spec/artifact>)`` outside the contract: the artifact read as a raw dict."""
    found = []
    for folder in ("kubetune", "components", "pipelines"):
        for path in sorted((root / folder).rglob("*.py")):
            relative = path.relative_to(root)
            if "tests" in relative.parts or relative.parts[:2] == ("kubetune", "contract"):
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Call) and ast.unparse(node.func) in LOADERS and node.args:
                    argument = ast.unparse(node.args[0]).lower()
                    if any(word in argument for word in ARTIFACT_WORDS):
                        found.append(f"{relative}:{node.lineno}: {ast.unparse(node)}")
    return found


# who may read a user's spec raw or validate one: the validation step, the validation module, the command lines
SPEC_READERS = {"read_document", "validate_spec", "load_spec"}
ARTIFACT_USERS = ("kubetune/steps", "kubetune/cluster", "components")
MAY_VALIDATE = {"kubetune/steps/validate.py"}


def artifact_revalidations(root: Path = ROOT) -> list[str]:
    """Calls of ``read_document``/``validate_spec``/``load_spec`` in the steps, the launcher and the components:
    each gets the artifact as a ``TrainingSpec`` (``TrainingSpec.read``) and validates nothing again."""
    found = []
    for folder in ARTIFACT_USERS:
        for path in sorted((root / folder).rglob("*.py")):
            relative = path.relative_to(root)
            if "tests" in relative.parts or relative.as_posix() in MAY_VALIDATE:
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Call) and ast.unparse(node.func).split(".")[-1] in SPEC_READERS:
                    found.append(f"{relative}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_step_launcher_or_component_validates_the_artifact_again():
    assert artifact_revalidations() == [], "take the TrainingSpec (TrainingSpec.read once); bind paths with validation.bind"


def test_the_scan_finds_a_revalidation(tmp_path):
    """The scan itself: a launcher that validates the artifact again, or reads it raw, is reported; the validation
    step is not."""
    launcher = tmp_path / "kubetune" / "cluster" / "launch.py"
    launcher.parent.mkdir(parents=True)
    launcher.write_text(
        "from kubetune import validation\nfrom kubetune.contract.spec import read_document\n\n"
        "def launch(path):\n    return validation.validate_spec(read_document(path)[0], require_paths=False)\n"
    )
    (tmp_path / "kubetune" / "steps").mkdir()
    (tmp_path / "kubetune" / "steps" / "validate.py").write_text("validate_spec(document, require_paths=False)\n")
    (tmp_path / "components" / "train" / "tests").mkdir(parents=True)
    (tmp_path / "components" / "train" / "tests" / "test_x.py").write_text("load_spec(path)\n")
    assert artifact_revalidations(tmp_path) == [
        "kubetune/cluster/launch.py:5: validation.validate_spec(read_document(path)[0], require_paths=False)",
        "kubetune/cluster/launch.py:5: read_document(path)",
    ]
    launcher.write_text("from kubetune.contract import TrainingSpec\n\ndef launch(path):\n    return TrainingSpec.read(path)\n")
    assert artifact_revalidations(tmp_path) == []


def test_no_step_parses_the_artifact_itself():
    assert raw_artifact_reads() == [], "read the kwargs artifact with TrainingSpec.read(path)"


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_read_gives_back_the_validated_spec(tmp_path, example):
    spec = load_spec(example)
    path = tmp_path / "artifact.json"
    path.write_text(spec.to_json())
    read = TrainingSpec.read(path)
    assert read.to_json() == spec.to_json() and read == spec.model_copy(update={"notes": []})
    assert read.model_path == spec.params.get("model_path") and read.secrets == spec.secrets


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1, 2]", "is not a kubetune kwargs artifact: it is not a JSON object with an `algorithm`"),
        ('{"learning_rate": 0.1}', "is not a kubetune kwargs artifact: it is not a JSON object with an `algorithm`"),
        ('{"algorithm": "osft"}', "is not a kubetune kwargs artifact: `backend` field required"),
        ('{"algorithm": "osft", "backend": "mini-trainer", "secrets": {"HF_TOKEN": "hf_x"}}', "`secrets.HF_TOKEN`"),
        ('{"algorithm": "osft",', "is not valid JSON"),
    ],
)
def test_anything_else_is_one_line_naming_the_file(tmp_path, text, message):
    path = tmp_path / "kwargs.json"
    path.write_text(text)
    with pytest.raises(KubetuneError) as info:
        TrainingSpec.read(path)
    (problem,) = info.value.problems
    assert info.value.title == "invalid kwargs artifact" and problem.where.startswith(str(path)) and message in str(problem)
    assert "hf_x" not in info.value.report()


def test_a_missing_artifact_is_one_line_naming_it(tmp_path):
    with pytest.raises(KubetuneError, match=r"missing\.json: cannot be read: No such file"):
        TrainingSpec.read(tmp_path / "missing.json")


def test_the_scan_finds_a_raw_read(tmp_path):
    """The scan itself: a step that parses the artifact with ``json.loads`` is reported (and one that does not is not)."""
    step = tmp_path / "kubetune" / "steps" / "step.py"
    step.parent.mkdir(parents=True)
    raw = "import json\nfrom pathlib import Path\n\ndef run(kwargs_path):\n    return json.loads(Path(kwargs_path).read_text())\n"
    step.write_text(raw)
    (tmp_path / "kubetune" / "contract").mkdir()
    (tmp_path / "kubetune" / "contract" / "spec.py").write_text("import json\njson.loads(spec_text)\n")
    assert raw_artifact_reads(tmp_path) == ["kubetune/steps/step.py:5: json.loads(Path(kwargs_path).read_text())"]
    step.write_text("import json\n\ndef run(curve_path):\n    return json.loads(curve_path.read_text())\n")
    assert raw_artifact_reads(tmp_path) == []
