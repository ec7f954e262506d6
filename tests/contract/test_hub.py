"""Training Hub drop-in: every named parameter of ``sft()``, ``osft()``, ``lora_sft()`` is curated here, and every
call of Training Hub's README, docs and examples that runs there validates here with the same meaning.

The named parameters come from the installed training-hub when there is one, else from the committed snapshot
of the release ``TRAINING_HUB`` (``kubetune/contract/snapshots/training-hub.json``, read from its wheel).
The calls are ``tests/support/training_hub_calls.json``, collected from that release's sdist by
``tests/support/training_hub_calls.py``.
"""

import json
import re
from pathlib import Path

import pytest

from kubetune.backends.registry import get_backend
from kubetune.contract import hub
from kubetune.errors import KubetuneError
from kubetune.validation import validate_spec

TRAINING_HUB = "0.11.2"  # the training-hub release whose named parameters kubetune/contract/params.py matches
# Named parameters of Training Hub's functions that are no params field, and what becomes of them.
NOT_FIELDS = {
    "backend": "the spec's `backend` key: Training Hub's backend name for the algorithm (or an alias)",
    "callbacks": "refused: Python callbacks cannot travel in a JSON artifact (null, its default, is left out)",
    # lora_sft's: Training Hub hands it to TRL's SFTConfig as it is, so it is that backend kwarg (checked as TRL's)
    "per_device_eval_batch_size": "TRL's own SFTConfig field (default here as there: the train micro-batch size)",
}
CALLS = json.loads((Path(__file__).parents[1] / "support" / "training_hub_calls.json").read_text())
INSTALLED = hub.read_installed()
NAMED = (INSTALLED or hub.load_snapshot())["functions"]
REQUIRED = {  # enough for each algorithm's backend (paths are bound by the pipeline)
    "sft": {"max_seq_len": 64, "effective_batch_size": 8, "learning_rate": 1e-5},
    "osft": {"max_seq_len": 64, "max_tokens_per_gpu": 128, "effective_batch_size": 8, "learning_rate": 1e-5,
             "unfreeze_rank_ratio": 0.25},
    "lora_sft": {},
}  # fmt: skip


def spec(algorithm: str, **kwargs):
    return validate_spec({"algorithm": algorithm, **REQUIRED[algorithm], **kwargs}, require_paths=False)


def refused(algorithm: str, **kwargs) -> dict[str, str]:
    """The fields a spec is refused for, with their messages (each problem names one field)."""
    with pytest.raises(KubetuneError) as info:
        spec(algorithm, **kwargs)
    return {re.search(r"`([^`]+)`", p.where).group(1): p.message for p in info.value.problems}


@pytest.mark.parametrize("function", sorted(NAMED))
def test_every_named_parameter_of_training_hub_is_curated(function):
    fields = set(get_backend(function).params_model.model_fields)
    missing = [name for name in NAMED[function] if name not in fields and name not in NOT_FIELDS]
    assert not missing, f"training-hub's {function}() names {missing}: curate them in kubetune/contract/params.py"


def test_the_snapshot_is_the_matched_release_and_matches_the_installed_training_hub():
    snapshot = hub.load_snapshot()
    assert snapshot["version"] == TRAINING_HUB == CALLS["training_hub"]
    new_in_0_11 = {"enable_jit_checkpoint", "checkpoint_storage", "callbacks", "eval_data_path", "trust_remote_code"}
    assert new_in_0_11 <= set(snapshot["functions"]["lora_sft"])
    if INSTALLED is None:
        pytest.skip("training-hub is not installed here (it pulls numba, timm, ...): the snapshot above is what is checked")
    assert snapshot == INSTALLED, (
        f"installed training-hub {INSTALLED['version']} differs from the snapshot's {snapshot['version']}: "
        "run `python -m kubetune.contract.hub`, curate what is new and update TRAINING_HUB"
    )


@pytest.mark.parametrize("function", sorted(NAMED))
def test_named_parameters_that_are_not_fields_mean_what_not_fields_says(function):
    default_backend = NAMED[function]["backend"]["default"]
    assert spec(function, backend=default_backend).backend == default_backend
    assert refused(function, callbacks=["<MetricsLogger()>"]) == {
        "callbacks": "cannot be set in a spec: Python callbacks cannot travel in a JSON artifact"
    }
    if "per_device_eval_batch_size" in NAMED[function]:  # TRL's field of that name, as Training Hub passes it
        assert spec(function, per_device_eval_batch_size=4).backend_kwargs == {"per_device_eval_batch_size": 4}


@pytest.mark.parametrize("case", CALLS["calls"], ids=[c["source"] for c in CALLS["calls"]])
def test_every_documented_training_hub_call_validates_here_with_the_same_meaning(case):
    document = {"algorithm": case["function"], **case["call"]}
    if "refused" in case:  # see its "why": refused in Training Hub too, or dropped there without a word
        with pytest.raises(KubetuneError) as info:
            validate_spec(document)
        named = {re.search(r"`([^`]+)`", p.where).group(1) for p in info.value.problems}
        assert named == set(case["refused"]), case["why"]
        return
    result = validate_spec(document)
    for key, value in case["call"].items():
        if value is None:  # Training Hub's "not given"
            continue
        if key == "backend":
            assert result.backend == value
            continue
        if key == "nproc_per_node" and isinstance(value, str) and value.strip().isdigit():
            value = int(value)  # Training Hub's reading of "8"
        stored = result.params[key] if key in result.params else result.backend_kwargs[key]
        assert stored == value, key


def test_nproc_per_node_is_read_as_training_hub_reads_it():
    from kubetune.backends.rules import TORCHRUN_NAMES, torchrun_kwargs

    for given, stored, launched in [("1", 1, 1), (" 8 ", 8, 8), (2, 2, 2), ("auto", "auto", "gpu"), (" GPU", "gpu", "gpu")]:
        for algorithm in ("sft", "osft", "lora_sft"):
            params = spec(algorithm, nproc_per_node=given).params
            assert params["nproc_per_node"] == stored
            assert torchrun_kwargs(params, TORCHRUN_NAMES)["nproc_per_node"] == launched
    for bad in ("0", "-1", "two", 0, True):
        assert refused("sft", nproc_per_node=bad) == {"nproc_per_node": 'must be a positive count (2 or "2"), "auto" or "gpu"'}


def test_checkpoint_storage_takes_s3_and_refuses_gs_in_one_line():
    for algorithm in ("sft", "osft", "lora_sft"):
        assert spec(algorithm, checkpoint_storage="pvc").params["checkpoint_storage"] == "pvc"
        given = spec(algorithm, checkpoint_storage="s3://bucket/experiments/run1", enable_jit_checkpoint=True)
        assert given.params["checkpoint_storage"] == "s3://bucket/experiments/run1"
        assert refused(algorithm, checkpoint_storage="gs://bucket") == {
            "checkpoint_storage": "is gs://, which kubetune cannot mirror to: it has no GCS layer"
        }
    for bad in ("file:///tmp/x", "s3://bucket/x?versionId=1", " ", "s3://", "abfs://c/p"):
        assert refused("sft", checkpoint_storage=bad)["checkpoint_storage"].startswith('must be "pvc" or an s3://')
    with pytest.raises(KubetuneError) as info:  # a credential in the URI: refused and never shown
        spec("osft", checkpoint_storage="s3://AKIAABCDEFGHIJKLMNOP:wJalrXUtnFEMIK7MDENGbPxRfiCYzEXAMPLEKEY@bucket/run")
    assert "wJalrXUtnFEMI" not in str(info.value) and "checkpoint_storage" in str(info.value)


def test_enable_jit_checkpoint_is_each_backends_sigterm_save(tmp_path):
    from kubetune.steps.train import bind

    for algorithm in ("sft", "osft"):  # instructlab-training's and mini-trainer's on_demand_checkpointing
        for given, expected in ((None, True), (True, True), (False, False)):
            extra = {} if given is None else {"enable_jit_checkpoint": given}
            _, args = get_backend(algorithm).build(bind(spec(algorithm, **extra), "/m", tmp_path / "train", tmp_path / "out"))
            assert args.on_demand_checkpointing is expected
        for jit in (True, False):
            assert refused(algorithm, enable_jit_checkpoint=jit, on_demand_checkpointing=not jit) == {
                "on_demand_checkpointing": f"contradicts enable_jit_checkpoint ({str(jit).lower()})"
            }
    # lora_sft: our stop-on-signal callback, never transformers' own SIGTERM handler (TrainingArguments has a field
    # of the same name, which a curated name would otherwise reach)
    lora = spec("lora_sft", enable_jit_checkpoint=True, ckpt_output_dir=str(tmp_path / "o"))
    assert "enable_jit_checkpoint" not in get_backend("lora_sft").sft_config_kwargs(lora, has_eval=False, use_cpu=True)
    assert get_backend("lora_sft").build(lora)[0].enable_jit_checkpoint is False


def test_eval_data_path_is_our_validation_split_evaluated_as_training_hub_does(tmp_path):
    from kubetune.steps.train import bind

    validation = tmp_path / "val"
    validation.mkdir()
    lora = spec("lora_sft", eval_data_path="./eval.jsonl", micro_batch_size=3)
    with pytest.raises(KubetuneError, match="eval_data_path.*prepared none"):
        bind(lora, "/m", tmp_path / "train", tmp_path / "out", validation)  # an empty split (validation_ratio 0)
    (validation / "data.jsonl").write_text('{"input_ids": [1], "labels": [1]}\n')
    bound = bind(lora, "/m", tmp_path / "train", tmp_path / "out", validation)
    assert bound.params["eval_data_path"] == str(validation / "data.jsonl")
    args = get_backend("lora_sft").sft_config_kwargs(bound, has_eval=True, use_cpu=True)
    assert (args["eval_strategy"], args["eval_steps"], args["per_device_eval_batch_size"]) == ("steps", 500, 3)
    with pytest.raises(ValueError, match="needs validation data"):  # never an eval set dropped without a word
        get_backend("lora_sft").sft_config_kwargs(bound, has_eval=False, use_cpu=True)
    given = spec("lora_sft", eval_data_path="e.jsonl", eval_steps=7, per_device_eval_batch_size=16, ckpt_output_dir="/o")
    args = get_backend("lora_sft").sft_config_kwargs(given, has_eval=True, use_cpu=True)
    assert (args["eval_steps"], args["per_device_eval_batch_size"]) == (7, 16)
    assert refused("lora_sft", eval_data_path=" ") == {"eval_data_path": "is empty: give a path"}
    assert refused("lora_sft", per_device_eval_batch_size=0) == {"per_device_eval_batch_size": "must be >= 1"}


def test_unsloth_vision_options_are_accepted_where_they_hold_and_refused_where_they_cannot():
    assert spec("lora_sft", finetune_vision_layers=False, finetune_language_layers=True).params["finetune_language_layers"]
    assert list(refused("lora_sft", finetune_vision_layers=True)) == ["finetune_vision_layers"]
    assert list(refused("lora_sft", finetune_language_layers=False)) == ["finetune_language_layers"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, tiny_model) -> tuple[Path, Path]:
    """The sample data prepared for the tiny model: train and validation splits."""
    from kubetune.steps.prepare import prepare

    data = tmp_path_factory.mktemp("data")
    prepare("kubetune://sample-chat", str(tiny_model), data / "train", data / "val", num_proc=1)
    return data / "train", data / "val"


@pytest.mark.slow
def test_eval_data_path_makes_trl_evaluate_during_training(tmp_path, tiny_model, prepared):
    from kubetune.steps.train import train
    from kubetune.validation import load_spec

    train_dir, val_dir = prepared
    kwargs = tmp_path / "kwargs.json"
    kwargs.write_text(json.dumps({"algorithm": "lora_sft", "max_steps": 2, "micro_batch_size": 4, "eval_data_path": "eval.jsonl",
                                  "eval_steps": 1, "per_device_eval_batch_size": 16}))  # fmt: skip
    result = train(load_spec(kwargs, require_paths=False), str(tiny_model), train_dir, tmp_path / "out", val_dir)
    history = json.loads((result.output_dir / "trainer_state.json").read_text())["log_history"]
    assert [entry["step"] for entry in history if "eval_loss" in entry] == [1, 2]


@pytest.mark.slow
def test_enable_jit_checkpoint_false_lets_sigterm_stop_lora_without_a_save(tmp_path, tiny_model, prepared):
    """Training Hub's default: no save on SIGTERM. The step dies by the signal; what it saved before stays."""
    import signal
    import subprocess
    import sys
    import time

    train_dir, val_dir = prepared
    kwargs = tmp_path / "kwargs.json"
    kwargs.write_text(json.dumps({"algorithm": "lora_sft", "max_steps": 5000, "micro_batch_size": 4, "save_steps": 2,
                                  "enable_jit_checkpoint": False}))  # fmt: skip
    script = (
        "import sys; from kubetune.steps.train import train; from kubetune.validation import load_spec; "
        "train(load_spec(sys.argv[1], require_paths=False), *sys.argv[2:6])"
    )
    out = tmp_path / "out" / "checkpoints"
    args = [sys.executable, "-c", script, str(kwargs), str(tiny_model), str(train_dir), str(tmp_path / "out"), str(val_dir)]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = out / "checkpoint-2" / "trainer_state.json"
    deadline = time.monotonic() + 120
    while not first.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == -signal.SIGTERM
    assert first.exists() and not (out / "final").exists()


CUSTOM_CONFIG = "from transformers import LlamaConfig\n\n\nclass TinyConfig(LlamaConfig):\n    model_type = 'kubetune_tiny'\n"
CUSTOM_MODEL = (
    "from transformers import LlamaForCausalLM\n\nfrom .configuration_tiny import TinyConfig\n\n\n"
    "class TinyForCausalLM(LlamaForCausalLM):\n    config_class = TinyConfig\n"
)
LOAD = """
import sys
from kubetune.backends.lora import LoRASFT
from kubetune.validation import validate_spec
for trust in (False, True):
    spec = validate_spec({"algorithm": "lora_sft", "trust_remote_code": trust, "model_path": sys.argv[1], "data_path": "d",
                          "ckpt_output_dir": "o"})
    try:
        print(type(LoRASFT()._load(spec, None)[0]).__name__)
    except ValueError as e:
        print("refused" if "trust_remote_code" in str(e) else repr(e))
"""


@pytest.mark.slow
def test_trust_remote_code_loads_a_model_with_its_own_code(tmp_path, tiny_model):
    """A model whose classes come with it (``auto_map``): transformers refuses it unless lora_sft's
    ``trust_remote_code`` is true, and then trains the model's own class."""
    import os
    import shutil
    import subprocess
    import sys

    model = tmp_path / "custom"
    shutil.copytree(tiny_model, model)
    config = json.loads((model / "config.json").read_text())
    config.update(model_type="kubetune_tiny", architectures=["TinyForCausalLM"], auto_map={
        "AutoConfig": "configuration_tiny.TinyConfig", "AutoModelForCausalLM": "modeling_tiny.TinyForCausalLM"})  # fmt: skip
    (model / "config.json").write_text(json.dumps(config))
    (model / "configuration_tiny.py").write_text(CUSTOM_CONFIG)
    (model / "modeling_tiny.py").write_text(CUSTOM_MODEL)
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}  # remote code is copied there
    done = subprocess.run([sys.executable, "-c", LOAD, str(model)], capture_output=True, text=True, env=env, timeout=300)
    assert done.stdout.split() == ["refused", "TinyForCausalLM"], done.stderr[-2000:]


@pytest.mark.parametrize("algorithm", ["sft", "osft", "lora_sft"])
def test_callbacks_null_and_empty_checkpoint_storage_mean_what_they_mean_in_training_hub(algorithm):
    """Training Hub 0.11.2: ``callbacks=None`` is its default (left out), and ``checkpoint_storage=""`` is "pvc"
    (``resolve_checkpoint_storage``): both accepted here with that meaning; a callback itself stays refused."""
    given = spec(algorithm, callbacks=None, checkpoint_storage="")
    assert "callbacks" not in given.backend_kwargs and given.params["checkpoint_storage"] == "pvc"
    assert list(refused(algorithm, callbacks=[])) == ["callbacks"]
