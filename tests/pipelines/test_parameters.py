"""Each pipeline parameter is declared once, in ``pipelines/parameters.py``: the compiled pipelines take exactly the
table's parameters, feed exactly the components it names, each through the input of the parameter's own name (one
name end to end, no exceptions), and a TrainJob setting has that one name down to the TrainJob."""

import ast
import dataclasses
import inspect
import re
from pathlib import Path

import pytest
import yaml
from kfp import compiler

from kubetune.cluster.trainjob import TrainJobSettings
from kubetune.cluster.watch import DEFAULT_LIMITS, Limits
from kubetune.components.train.component import train_on_trainjob
from kubetune.pipelines.evaluate_export import evaluate_export
from kubetune.pipelines.finetune import finetune, finetune_trainjob, finetune_workspace
from kubetune.pipelines.parameters import PARAMETERS, REQUIRED, parameters_of

ROOT = Path(__file__).resolve().parents[2]
PIPELINES = {f.pipeline_func.__name__: f for f in (finetune, finetune_workspace, finetune_trainjob, evaluate_export)}
KFP_TYPES = {str: "STRING", int: "NUMBER_INTEGER", float: "NUMBER_DOUBLE", bool: "BOOLEAN", dict: "STRUCT", list: "LIST"}
COMPONENT_TYPES = {str: "String", int: "Integer", float: "Float", bool: "Boolean", dict: "Dict", list: "List"}
CHANNEL = "pipelinechannel--"  # how KFP passes a pipeline parameter into a sub-DAG or a task's settings (GPU limit)


def compiled(name: str, tmp_path: Path) -> dict:
    compiler.Compiler().compile(PIPELINES[name], str(tmp_path / f"{name}.yaml"))
    return next(yaml.safe_load_all((tmp_path / f"{name}.yaml").read_text()))


def dags(spec: dict) -> list[dict]:
    return [spec["root"]["dag"], *(c["dag"] for c in spec["components"].values() if "dag" in c)]


def fed_inputs(spec: dict) -> set[tuple[str, str]]:
    """Every (pipeline parameter, ``component.input`` it feeds), in the root DAG and in the conditions' sub-DAGs;
    not the channels of task settings (``pipelinechannel--gpus`` of the accelerator limit) nor the importer."""
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    fed = set()
    for dag in dags(spec):
        for task in dag["tasks"].values():
            component = spec["components"][task["componentRef"]["name"]]
            executor = spec["deploymentSpec"]["executors"].get(component.get("executorLabel"), {})
            if "container" not in executor:  # a condition's sub-DAG, the importer
                continue
            for name, value in task.get("inputs", {}).get("parameters", {}).items():
                source = value.get("componentInputParameter", "").removeprefix(CHANNEL)
                if source in parameters and not name.startswith(CHANNEL):
                    fed.add((source, f"{task['componentRef']['name'].removeprefix('comp-').replace('-', '_')}.{name}"))
    return fed


def referenced(document) -> set[str]:
    """Every pipeline parameter a task, a condition or a Kubernetes setting refers to."""
    if isinstance(document, dict):
        found = {document["componentInputParameter"].removeprefix(CHANNEL)} if "componentInputParameter" in document else set()
        found |= set(re.findall(r"inputs\.parameter_values\['pipelinechannel--(\w+)'\]", str(document.get("condition", ""))))
        return found.union(*(referenced(v) for v in document.values()))
    if isinstance(document, list):
        return set().union(*(referenced(v) for v in document))
    return set()


@pytest.mark.parametrize("name", list(PIPELINES))
def test_a_pipeline_takes_exactly_the_tables_parameters_with_their_types_defaults_and_docs(tmp_path, name):
    declared = compiled(name, tmp_path)["root"]["inputDefinitions"]["parameters"]
    expected = {
        p.name: {
            "parameterType": KFP_TYPES[p.type],
            "description": p.doc,
            **({} if p.default is REQUIRED else {"defaultValue": p.default, "isOptional": True}),
        }
        for p in parameters_of(name)
    }
    assert declared == expected
    assert list(inspect.signature(PIPELINES[name].pipeline_func).parameters) == [p.name for p in parameters_of(name)]


@pytest.mark.parametrize("name", list(PIPELINES))
def test_the_tasks_take_exactly_the_inputs_the_table_says_each_parameter_feeds(tmp_path, name):
    spec = compiled(name, tmp_path)
    components = {c.removeprefix("comp-").replace("-", "_") for c in spec["components"]}
    declared = {(p.name, f"{c}.{p.name}") for p in parameters_of(name) for c in p.feeds if c in components}
    assert fed_inputs(spec) == declared


@pytest.mark.parametrize("name", list(PIPELINES))
def test_a_pipeline_parameter_feeds_only_component_inputs_of_its_own_name(tmp_path, name):
    """Read from the compiled YAML alone: what a user passes with ``-p NAME`` arrives as the input ``NAME``."""
    fed = fed_inputs(compiled(name, tmp_path))
    assert fed and [(p, target) for p, target in fed if target.split(".")[1] != p] == []


@pytest.mark.parametrize("name", list(PIPELINES))
def test_every_parameter_is_used(tmp_path, name):
    compiler.Compiler().compile(PIPELINES[name], str(tmp_path / "p.yaml"))
    spec, platform = yaml.safe_load_all((tmp_path / "p.yaml").read_text())
    unused = set(spec["root"]["inputDefinitions"]["parameters"]) - referenced(spec["root"]) - referenced(spec["components"])
    assert not unused - referenced(platform)


def test_the_table_feeds_real_component_inputs_of_its_types():
    from kubetune.components.benchmark.component import benchmark_model
    from kubetune.components.evaluate.component import evaluate_model
    from kubetune.components.export.component import export_model
    from kubetune.components.gate.component import promotion_gate
    from kubetune.components.prepare.component import prepare_data
    from kubetune.components.register.component import register_model
    from kubetune.components.train.component import train_model
    from kubetune.components.validate_spec.component import validate_kwargs

    specs = {
        c.python_func.__name__: c.component_spec
        for c in (evaluate_model, export_model, prepare_data, register_model, train_model, train_on_trainjob, validate_kwargs)
    } | {"promotion_gate": promotion_gate.component_spec, "benchmark_model": benchmark_model.component_spec}
    for p in PARAMETERS:
        for component in p.feeds:
            assert specs[component].inputs[p.name].type == COMPONENT_TYPES[p.type], f"{component}.{p.name}"


def test_a_trainjob_setting_has_one_name_from_the_pipeline_to_the_trainjob():
    """Pipeline parameter = component input = ``TrainJobSettings`` (or ``Limits``) field, same default; every setting
    has a caller."""
    settings = set(TrainJobSettings.model_fields) - {"secret_env"}  # secret_env: the launcher's, from secret names
    limits = {f.name for f in dataclasses.fields(Limits)} - {"poll_s"}  # poll_s: how often, not how long
    tree = ast.parse(inspect.getsource(train_on_trainjob.python_func))
    for function, names in (("settings_from", settings), ("Limits", limits)):
        (call,) = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == function]
        assert {k.arg for k in call.keywords} == names
        assert all(isinstance(k.value, ast.Name) and k.value.id == k.arg for k in call.keywords)  # passed on as named
    settings |= limits
    table = {p.name: p for p in parameters_of("finetune_trainjob")}
    inputs = train_on_trainjob.component_spec.inputs
    for name in settings - {"workspace_dir"}:  # workspace_dir: where the pipeline mounts the PVC, not a parameter
        assert "train_on_trainjob" in table[name].feeds
        if inputs[name].optional:  # the component's own default, for a caller other than the pipeline
            assert table[name].default == inputs[name].default, name
        if name in limits:
            assert table[name].default == getattr(DEFAULT_LIMITS, name), name
        elif not TrainJobSettings.model_fields[name].is_required():
            assert table[name].default == TrainJobSettings.model_fields[name].get_default(call_default_factory=True), name


def test_the_trainjob_nodes_get_the_secrets_the_in_pod_training_step_mounts(tmp_path):
    """One list of the training step's secrets: mounted on the in-pod training task, passed by name to the
    TrainJob launcher, and given to every node."""
    from kubetune.cluster.launch import secret_env
    from kubetune.pipelines.parameters import EMBEDDED
    from kubetune.secrets import SECRET_KEYS
    from kubetune.validation import validate_spec

    compiler.Compiler().compile(finetune, str(tmp_path / "p.yaml"))
    _, platform = yaml.safe_load_all((tmp_path / "p.yaml").read_text())
    mounts = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train-model"]["secretAsEnv"]
    mounted = {m["secretNameParameter"]["componentInputParameter"] for m in mounts}
    assert mounted == {name for name in train_on_trainjob.component_spec.inputs if name.endswith("_secret")}
    spec = validate_spec({"algorithm": "lora_sft", **EMBEDDED["lora_sft"]}, require_paths=False)
    nodes = secret_env(spec, {kind: f"{kind}-secret" for kind in SECRET_KEYS})
    assert {e.secret for e in nodes} == {name.replace("_", "-") for name in mounted}


def test_the_algorithm_list_and_default_come_from_the_backend_registry(tmp_path):
    from kubetune.backends.registry import DEFAULT_ALGORITHM, algorithms
    from kubetune.pipelines.parameters import EMBEDDED

    (algorithm,) = (p for p in PARAMETERS if p.name == "algorithm")
    assert algorithm.default == DEFAULT_ALGORITHM in algorithms() and sorted(EMBEDDED) == algorithms()
    described = compiled("finetune", tmp_path)["root"]["inputDefinitions"]["parameters"]["algorithm"]["description"]
    assert all(name in described for name in algorithms()), described
