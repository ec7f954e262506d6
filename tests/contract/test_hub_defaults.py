"""A Training Hub 0.11.2 call means the same here for the parameters it leaves out.

``TH_*`` below is what training-hub 0.11.2 hands each backend for a minimal call: its own defaults and the values its
algorithm module fills in, each with the file:line of the wheel. Every other field is the backend's own default on
both sides. When training-hub's source is at hand (``TRAINING_HUB_WHEEL``, or an installed training-hub),
``test_the_snapshot_is_training_hubs_source`` re-reads all of them from it. The other tests build kubetune's
configuration objects for the same call through the training step's ``bind()`` and fail on any field that differs
from Training Hub's, unless it is a deliberate difference of ``DELIBERATE``, each named in the README's defaults table.
"""

import ast
import dataclasses
import importlib.util
import os
import re
import zipfile
from pathlib import Path

import pytest

from kubetune.steps.train import bind  # isort: skip (loads kubetune.contract before the rules module)

from kubetune.backends.registry import get_backend
from kubetune.backends.rules import TORCHRUN_NAMES, nproc_notice, torchrun_kwargs
from kubetune.errors import KubetuneError
from kubetune.validation import validate_spec

README = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
# the minimal calls: what each backend needs (paths are bound by the training step)
CALLS = {
    "sft": {"max_seq_len": 64, "effective_batch_size": 8, "learning_rate": 1e-5},
    "osft": {"max_seq_len": 64, "max_tokens_per_gpu": 128, "effective_batch_size": 8, "learning_rate": 1e-5,
             "unfreeze_rank_ratio": 0.25},
    "lora_sft": {},
}  # fmt: skip

# field -> (value, where in training-hub 0.11.2, the text there). "<x>" is the call's or the bound value of x.
TH_TORCHRUN = {
    "nproc_per_node": (1, "utils.py:303", "if nproc_val is not None else 1"),
    "nnodes": (1, "utils.py:307", "'nnodes': 1,"),
    "node_rank": (0, "utils.py:308", "'node_rank': 0,"),
    "rdzv_id": (0, "utils.py:328", "if rdzv_id_val is not None else 0"),
}
TH_SFT = {  # instructlab-training's TrainingArgs; any other field: TrainingArgs' own default (sft.py:135)
    "data_output_dir": ("<ckpt_output_dir>/data", "algorithms/sft.py:54", "if 'data_output_dir' not in training_params:"),
    "max_batch_len": ("<max_seq_len>", "algorithms/sft.py:74", "training_params.get('max_seq_len', 60000)"),
}
TH_OSFT = {  # mini-trainer's TrainingArgs; any other field: TrainingArgs' own default (osft.py:578)
    "training_mode": ("epoch", "algorithms/osft.py:559", "training_args_pre.get('training_mode', TrainingMode.EPOCH)"),
    "osft": (True, "algorithms/osft.py:567", "training_args_pre.get('osft', True)"),
}
# lora_sft: TRL's SFTConfig (algorithms/lora.py _build_training_args) and Unsloth's get_peft_model
# (_apply_lora_config, with peft_extender.py's LoRA defaults), for a text model that supports gradient
# checkpointing, one process, no eval set; report_to is the tracking tests' (tests/backends/test_tracking.py)
TH_SFT_CONFIG = {
    "output_dir": ("<ckpt_output_dir>", 617), "max_length": (2048, 618), "num_train_epochs": (3, 619),
    "per_device_train_batch_size": (2, 620), "gradient_accumulation_steps": (1, 621), "gradient_checkpointing": (True, 622),
    "learning_rate": (2e-4, 623), "weight_decay": (0.01, 624), "fp16": (False, 625), "bf16": (True, 626),
    "max_grad_norm": (0.3, 627), "warmup_steps": (10, 628), "lr_scheduler_type": ("linear", 629), "logging_steps": (1, 632),
    "logging_dir": (None, 633), "save_steps": (500, 634), "eval_strategy": ("no", 635), "eval_steps": (500, 636),
    "save_total_limit": (3, 637), "per_device_eval_batch_size": (2, 638), "dataloader_pin_memory": (False, 644),
    "remove_unused_columns": (False, 645), "ddp_find_unused_parameters": (False, 648), "packing": (True, 652),
    "packing_strategy": ("bfd", 653), "dataset_text_field": ("text", 656), "assistant_only_loss": (False, 660),
    "run_name": (None, 666),
}  # fmt: skip
TH_LORA = {
    "r": (16, 442), "target_modules": (None, 443), "lora_alpha": (32, 444), "lora_dropout": (0.0, 445), "bias": ("none", 446),
    "use_gradient_checkpointing": ("unsloth", 447), "random_state": (3407, 448), "use_rslora": (False, 449),
    "use_dora": (False, 465), "init_lora_weights": (True, 467),
}  # fmt: skip
# Unsloth's own arguments (not LoraConfig fields): kubetune's Unsloth path passes the same (LoRASFT._load)
UNSLOTH_ARGUMENTS = {"use_gradient_checkpointing": 'use_gradient_checkpointing="unsloth"', "random_state": 'p.get("seed", 3407)'}

# (algorithm, configuration object, field) -> why kubetune differs; the README's defaults table names each field
DELIBERATE = {
    ("sft", "TorchrunArgs", "nproc_per_node"): "every GPU of the pod (the pipeline's gpus), where Training Hub starts one",
    ("osft", "TorchrunArgs", "nproc_per_node"): "every GPU of the pod (the pipeline's gpus), where Training Hub starts one",
    ("sft", "TrainingArgs", "on_demand_checkpointing"): "enable_jit_checkpoint is on by default here",
    ("osft", "TrainingArgs", "on_demand_checkpointing"): "enable_jit_checkpoint is on by default here",
    ("sft", "TrainingArgs", "data_output_dir"): "the data the pipeline's prepare step already tokenized",
    ("sft", "TrainingArgs", "process_data"): "the data the pipeline's prepare step already tokenized",
    ("lora_sft", "LoraConfig", "target_modules"): '"all-linear" (PEFT needs a set): the layers Unsloth picks for None',
    ("lora_sft", "SFTConfig given eval_steps", "eval_strategy"): "eval_steps without eval_data_path evaluates on the "
    "pipeline's validation split, where Training Hub skips evaluation with a warning",
}


def minimal(algorithm, tmp_path):
    spec = validate_spec({"algorithm": algorithm, **CALLS[algorithm]}, require_paths=False)
    return bind(spec, "/models/base", tmp_path / "train", tmp_path / "out")


def resolved(value, p):
    """A ``TH_*`` value for the bound call ``p``."""
    if isinstance(value, str) and (found := re.fullmatch(r"<(\w+)>(.*)", value)):
        return f"{p[found.group(1)]}{found.group(2)}" if found.group(2) else p[found.group(1)]
    return value


def differing(ours: dict, theirs: dict) -> dict:
    return {k: (ours.get(k), theirs.get(k)) for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k)}


@pytest.fixture
def no_torchrun_env(monkeypatch):
    """Training Hub reads PET_* (and MASTER_ADDR/PORT) for what a call leaves out; none here unless a test sets it."""
    for name in TORCHRUN_NAMES:
        monkeypatch.delenv(f"PET_{name.upper()}", raising=False)
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)


def check(algorithm: str, kind: str, ours: dict, theirs: dict) -> None:
    found = differing(ours, theirs)
    undocumented = {k: v for k, v in found.items() if (algorithm, kind, k) not in DELIBERATE}
    assert not undocumented, f"{algorithm}: {kind} (ours, Training Hub's) differ without a documented reason: {undocumented}"
    stale = [k for (a, c, k) in DELIBERATE if (a, c) == (algorithm, kind) and k not in found]
    assert not stale, f"{algorithm}: {kind} {stale} are listed as deliberate differences but are equal now: unlist them"


@pytest.mark.parametrize("algorithm", ["sft", "osft"])
def test_torchrun_settings_are_training_hubs_but_the_documented_process_count(algorithm, tmp_path, no_torchrun_env):
    pytest.importorskip({"sft": "instructlab.training", "osft": "mini_trainer"}[algorithm], reason="the backend's extra")
    torch_args, _ = get_backend(algorithm).build(minimal(algorithm, tmp_path))
    theirs = {name: None for name in TORCHRUN_NAMES} | {k: v for k, (v, _, _) in TH_TORCHRUN.items()}
    check(algorithm, "TorchrunArgs", {k: getattr(torch_args, k) for k in TORCHRUN_NAMES}, theirs)


def test_sft_training_args_are_training_hubs_for_every_field_left_out(tmp_path):
    config = pytest.importorskip("instructlab.training.config", reason="instructlab-training is the `sft` extra")
    bound = minimal("sft", tmp_path)
    _, ours = get_backend("sft").build(bound)
    p = bound.params
    call = {k: p[k] for k in ("model_path", "data_path", "ckpt_output_dir", *CALLS["sft"])}
    theirs = config.TrainingArgs(**call, **{k: resolved(v, p) for k, (v, _, _) in TH_SFT.items()})
    check("sft", "TrainingArgs", ours.model_dump(), theirs.model_dump())


def test_osft_training_args_are_training_hubs_for_every_field_left_out(tmp_path):
    types = pytest.importorskip("mini_trainer.training_types", reason="mini-trainer is the `osft` extra")
    bound = minimal("osft", tmp_path)
    _, ours = get_backend("osft").build(bound)
    p = bound.params
    renamed = {"model_name_or_path": p["model_path"], "data_path": p["data_path"], "output_dir": p["ckpt_output_dir"],
               "batch_size": p["effective_batch_size"], "osft_unfreeze_rank_ratio": p["unfreeze_rank_ratio"],
               **{k: p[k] for k in ("max_tokens_per_gpu", "max_seq_len", "learning_rate") if k in p}}  # fmt: skip
    fields = {f.name for f in dataclasses.fields(types.TrainingArgs)}
    filled = {k: types.TrainingMode(v) if k == "training_mode" else v for k, (v, _, _) in TH_OSFT.items()}
    theirs = types.TrainingArgs(**{k: v for k, v in renamed.items() if k in fields}, **filled)
    check("osft", "TrainingArgs", vars(ours), vars(theirs))


def sft_config_fields(kwargs: dict) -> dict:
    """SFTConfig's fields for these keyword arguments (the others: SFTConfig's defaults), report_to left out."""
    from trl import SFTConfig

    defaults = {f.name: f.default for f in dataclasses.fields(SFTConfig) if f.default is not dataclasses.MISSING}
    return {k: v for k, v in (defaults | kwargs).items() if k != "report_to"}


def test_lora_sft_trl_and_lora_settings_are_training_hubs_for_every_field_left_out(tmp_path):
    pytest.importorskip("trl", reason="TRL is the `lora` extra")
    from peft import LoraConfig

    bound = minimal("lora_sft", tmp_path)
    backend, p = get_backend("lora_sft"), bound.params
    ours = backend.sft_config_kwargs(bound, has_eval=False, use_cpu=False)
    theirs = {k: resolved(v, p) for k, (v, _) in TH_SFT_CONFIG.items()}
    check("lora_sft", "SFTConfig", sft_config_fields(ours), sft_config_fields(theirs))

    lora_fields = {f.name for f in dataclasses.fields(LoraConfig)}
    defaults = {f.name: f.default for f in dataclasses.fields(LoraConfig) if f.default is not dataclasses.MISSING}
    ours = defaults | backend.lora_config_kwargs(bound)
    theirs = defaults | {k: v for k, (v, _) in TH_LORA.items() if k in lora_fields} | {"task_type": ours["task_type"]}
    check("lora_sft", "LoraConfig", ours, theirs)
    assert set(TH_LORA) - lora_fields == set(UNSLOTH_ARGUMENTS)
    import inspect

    from kubetune.backends.lora import LoRASFT

    source = inspect.getsource(LoRASFT._load)
    assert all(text in source for text in UNSLOTH_ARGUMENTS.values()), "Unsloth's get_peft_model gets other arguments here"


def test_lora_sft_eval_steps_alone_evaluates_on_the_pipelines_split_where_training_hub_skips(tmp_path):
    """``eval_steps`` without ``eval_data_path``: Training Hub skips evaluation (a warning, algorithms/lora.py:173);
    the training step evaluates on the pipeline's validation split, the one documented difference."""
    pytest.importorskip("trl", reason="TRL is the `lora` extra")
    spec = validate_spec({"algorithm": "lora_sft", "eval_steps": 5}, require_paths=False)
    bound = bind(spec, "/models/base", tmp_path / "train", tmp_path / "out", tmp_path / "val")
    ours = get_backend("lora_sft").sft_config_kwargs(bound, has_eval=True, use_cpu=False)
    theirs = {k: resolved(v, bound.params) for k, (v, _) in TH_SFT_CONFIG.items()} | {"eval_steps": 5}
    check("lora_sft", "SFTConfig given eval_steps", sft_config_fields(ours), sft_config_fields(theirs))
    assert ours["eval_strategy"] == "steps"


def test_lora_sft_on_cpu_differs_only_in_the_documented_precision(tmp_path):
    pytest.importorskip("trl", reason="TRL is the `lora` extra")
    bound = minimal("lora_sft", tmp_path)
    backend = get_backend("lora_sft")
    gpu, cpu = (backend.sft_config_kwargs(bound, has_eval=False, use_cpu=use_cpu) for use_cpu in (False, True))
    assert differing(cpu, gpu) == {"use_cpu": (True, False), "bf16": (False, True)}
    assert "`bf16`" in defaults_section()


def test_lora_sft_effective_batch_size_sets_the_micro_batch_as_in_training_hub(tmp_path):
    pytest.importorskip("trl", reason="TRL is the `lora` extra")
    spec = validate_spec({"algorithm": "lora_sft", "effective_batch_size": 16, "micro_batch_size": 4,
                          "gradient_accumulation_steps": 2}, require_paths=False)  # fmt: skip
    bound = bind(spec, "/models/base", tmp_path / "train", tmp_path / "out")
    assert get_backend("lora_sft").sft_config_kwargs(bound, has_eval=False, use_cpu=False)["per_device_train_batch_size"] == 8


def test_torchrun_settings_left_out_come_from_pet_variables_as_in_training_hub():
    env = {"PET_NPROC_PER_NODE": "4", "PET_NNODES": "2", "PET_NODE_RANK": "1", "PET_RDZV_ID": " job ",
           "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29400"}  # fmt: skip
    assert torchrun_kwargs({}, TORCHRUN_NAMES, env) == {
        "nproc_per_node": 4, "nnodes": 2, "node_rank": 1, "rdzv_id": "job", "master_addr": "10.0.0.1", "master_port": 29400
    }  # fmt: skip
    # the spec wins; an endpoint given in the spec wins over an address from the environment (Training Hub warns)
    given = torchrun_kwargs({"nproc_per_node": "auto", "rdzv_endpoint": "h:1"}, TORCHRUN_NAMES, env)
    assert given["nproc_per_node"] == "gpu" and given["rdzv_endpoint"] == "h:1" and "master_addr" not in given
    assert torchrun_kwargs({}, TORCHRUN_NAMES, {"MASTER_PORT": "29400"}) == {
        "nproc_per_node": "gpu",
        "nnodes": 1,
        "node_rank": 0,
        "rdzv_id": 0,
    }  # a port without its address is dropped, as Training Hub drops it
    with pytest.raises(KubetuneError, match="exclude each other"):
        torchrun_kwargs({}, TORCHRUN_NAMES, {"PET_MASTER_ADDR": "a", "PET_RDZV_ENDPOINT": "b:1"})
    with pytest.raises(KubetuneError, match="nnodes"):
        torchrun_kwargs({}, TORCHRUN_NAMES, {"PET_NNODES": "two"})


def test_the_process_count_default_is_said_where_it_differs_from_training_hubs():
    import torch

    said = nproc_notice({}, env={})
    if not torch.cuda.is_available():  # CPU mode starts one process, as Training Hub does: nothing to say
        assert said is None
    else:
        assert said is not None and "Training Hub 0.11.2 starts one process" in said
    assert nproc_notice({"nproc_per_node": 2}, env={}) is None
    assert nproc_notice({}, env={"PET_NPROC_PER_NODE": "2"}) is None


def defaults_section() -> str:
    found = re.search(r"\n#### Defaults\n(.*?)(?=\n#{1,4} )", README, re.S)
    assert found, "README: the Training Hub section has no `#### Defaults` table"
    return found.group(1)


def test_every_deliberate_difference_is_in_the_readmes_defaults_table():
    section = defaults_section()
    missing = sorted({field for (_, _, field) in DELIBERATE if f"`{field}`" not in section})
    assert not missing, f"README's Training Hub defaults table does not name {missing}"


# ---------------------------------------------------------------- the snapshot above, read again from training-hub


def training_hub_source() -> dict[str, str] | None:
    """training-hub's source files (path under ``training_hub/`` -> text): the wheel ``TRAINING_HUB_WHEEL`` names, or
    the installed package."""
    if wheel := os.environ.get("TRAINING_HUB_WHEEL"):
        with zipfile.ZipFile(wheel) as z:
            return {n.removeprefix("training_hub/"): z.read(n).decode() for n in z.namelist() if n.startswith("training_hub/")}
    try:
        found = importlib.util.find_spec("training_hub")
    except (ImportError, ValueError):
        found = None
    if found is None or not found.submodule_search_locations:
        return None
    root = Path(next(iter(found.submodule_search_locations)))
    return {str(f.relative_to(root)): f.read_text(encoding="utf-8") for f in root.rglob("*.py")}


def evaluate(node: ast.expr, names: dict):
    """The value of one of Training Hub's simple expressions (constants, names, ``params.get``, ``a if c else b``,
    ``a or b``); ``...`` for anything else."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return names.get(node.id, ...)
    if isinstance(node, ast.IfExp):
        test = evaluate(node.test, names)
        return ... if test is ... else evaluate(node.body if test else node.orelse, names)
    if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.Or):
        values = [evaluate(v, names) for v in node.values]
        return ... if ... in values else next((v for v in values if v), values[-1])
    if isinstance(node, ast.Subscript) and ast.unparse(node.value) == "params" and isinstance(node.slice, ast.Constant):
        return names["params"].get(node.slice.value, ...)
    if isinstance(node, ast.Call) and ast.unparse(node.func) == "params.get" and not node.keywords:
        args = [evaluate(a, names) for a in node.args]
        return names["params"].get(*args) if ... not in args else ...
    return ...


def assignments(tree: ast.AST, names: dict) -> dict:
    """Names assigned from ``params.get(...)`` in ``tree``, evaluated (a later one does not replace a found value)."""
    for node in ast.walk(tree):
        target = node.targets[0] if isinstance(node, ast.Assign) else None
        call = node.value if target is not None and isinstance(node.value, ast.Call) else None
        if (
            isinstance(target, ast.Name)
            and call is not None
            and ast.unparse(call.func) == "params.get"
            and target.id not in names
        ):
            names[target.id] = evaluate(call, names)
    return names


def named(tree: ast.AST, kind, name: str):
    return [n for n in ast.walk(tree) if isinstance(n, kind) and getattr(n, "name", None) == name]


def read_lora(lora_source: str, peft_source: str) -> tuple[dict, dict]:
    """SFTConfig's and get_peft_model's arguments for the minimal call, with their lines, from training-hub's source."""
    defaults = next(
        n.value for n in ast.walk(ast.parse(peft_source))
        if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Name) and n.targets[0].id == "lora_defaults"
    )  # fmt: skip
    params = {"ckpt_output_dir": "<ckpt_output_dir>", **ast.literal_eval(defaults)}
    tree = ast.parse(lora_source)
    build = named(tree, ast.FunctionDef, "_build_training_args")[0]
    names = assignments(build, {"params": params, "is_vlm": False, "has_eval": False, "supports_grad_ckpt": True})
    call = next(n for n in ast.walk(build) if isinstance(n, ast.Call) and ast.unparse(n.func) == "SFTConfig")
    sft_config = {kw.arg: (evaluate(kw.value, names), kw.value.lineno) for kw in call.keywords if kw.arg != "report_to"}
    apply = named(tree, ast.FunctionDef, "_apply_lora_config")[0]
    names = assignments(apply, {"params": params, "supports_grad_ckpt": True})
    lora = {}
    for node in ast.walk(apply):
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name) and node.targets[0].id == "lora_config":
            pairs = zip(node.value.keys, node.value.values, strict=True)
            lora |= {ast.literal_eval(k): (evaluate(v, names), v.lineno) for k, v in pairs}
        target = node.targets[0] if isinstance(node, ast.Assign) else None
        if isinstance(target, ast.Subscript) and ast.unparse(target.value) == "lora_config" and isinstance(node.value, ast.Call):
            key = ast.literal_eval(target.slice)  # the optional ones, added where params holds them (not None)
            if key in params and params[key] is not None and key not in ("finetune_vision_layers", "finetune_language_layers"):
                lora[key] = (params[key], node.lineno)
    return sft_config, lora


SOURCE = training_hub_source()


@pytest.mark.skipif(SOURCE is None, reason="training-hub's source is not here (set TRAINING_HUB_WHEEL): the snapshot is used")
def test_the_snapshot_is_training_hubs_source():
    assert SOURCE is not None
    for table in (TH_TORCHRUN, TH_SFT, TH_OSFT):
        for field, (_, where, text) in table.items():
            path, line = where.split(":")
            assert text in SOURCE[path].splitlines()[int(line) - 1], f"{field}: {where} no longer reads {text!r}"
    sft_config, lora = read_lora(SOURCE["algorithms/lora.py"], SOURCE["algorithms/peft_extender.py"])
    assert sft_config == TH_SFT_CONFIG
    assert lora == TH_LORA
