"""The memory plan of real model shapes (config.json only, no weights): its verdict, its refusal with the numbers and
a suggestion that fits when planned again, and the computed parts held to the libraries' own numbers."""

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from kubetune.contract import TrainingSpec
from kubetune.errors import KubetuneError
from kubetune.memory import plan_memory, read_model_shape
from kubetune.memory.suggest import MAX_GPUS_PER_NODE, MAX_NODES

CONFIGS = Path(__file__).parent / "configs"
SHAPES = {name: read_model_shape(str(CONFIGS / f"{name}.json")) for name in ("llama-3.2-1b", "llama-3.1-8b", "llama-3.1-70b")}


def spec(algorithm: str, **params) -> TrainingSpec:
    return TrainingSpec(algorithm=algorithm, backend="unsloth" if algorithm == "lora_sft" else "x", params=params)


def test_sft_of_70b_on_8_gpus_of_80_gib_with_64000_tokens_is_refused_with_the_numbers_and_a_suggestion():
    plan = plan_memory(spec("sft", max_seq_len=4096, max_tokens_per_gpu=64000), SHAPES["llama-3.1-70b"], 8, 1)
    assert plan.parts["parameters"] == -(-70_553_706_496 * 2 // 8)  # Llama-3.1-70B's parameters, bf16, over 8 ranks
    with pytest.raises(KubetuneError) as refused:
        plan.check(80.0)
    problem = refused.value.problems[0]
    assert re.fullmatch(
        rf"needs {plan.total_gib:.1f} GiB per GPU, has 80\.0 GiB \(sft of .*llama-3\.1-70b\.json\)", problem.message
    )
    # HYBRID_SHARD (instructlab-training's default) shards within a node: the suggestion shards across nodes and cuts tokens
    assert re.fullmatch(r"use fsdp_options.sharding_strategy FULL_SHARD on \d+ node\(s\) of 8 GPUs and set max_tokens_per_gpu "
                        r"to \d+, planned at \d+\.\d GiB per GPU", problem.hint)  # fmt: skip


def test_a_plan_that_fits_passes_and_says_so():
    plan = plan_memory(
        spec("osft", max_seq_len=4096, max_tokens_per_gpu=8192, unfreeze_rank_ratio=0.25), SHAPES["llama-3.1-8b"], 8
    )
    plan.check(80.0)
    assert "Fits: needs" in plan.markdown(80.0) and plan.metrics()["memory_total_gib"] == round(plan.total_gib, 3)
    assert {r.name: r.how for r in plan.rows}["activations"] == "traced"


def _hint(plan, gib: float) -> str:
    with pytest.raises(KubetuneError) as refused:
        plan.check(gib)
    return refused.value.problems[0].hint


def _suggested(hint: str) -> dict[str, int]:
    found = dict(re.findall(r"(max_tokens_per_gpu|micro_batch_size|max_seq_len) (?:to )?(\d+)", hint))
    nodes = re.search(r"on (\d+) node|use (\d+) nodes", hint)
    gpus = re.search(r"use (\d+) GPUs per node", hint)
    layout = {"nnodes": int(next(g for g in nodes.groups() if g))} if nodes else {}
    return {**{k: int(v) for k, v in found.items()}, **layout, **({"gpus": int(gpus.group(1))} if gpus else {})}


def _least(algorithm: str, params: dict) -> tuple[TrainingSpec, int, int]:
    """The setting of ``algorithm`` that needs the least memory the suggestion searches: the most GPUs and nodes
    (sft: FULL_SHARD across them) with one sample per micro-batch (LoRA: 256 tokens)."""
    if algorithm == "lora_sft":
        return spec(algorithm, **{**params, "micro_batch_size": 1, "max_seq_len": 256}), 1, 1
    least = spec(algorithm, **{**params, "max_tokens_per_gpu": params["max_seq_len"]})
    if algorithm == "sft":
        least = least.model_copy(update={"backend_kwargs": {"fsdp_options": {"sharding_strategy": "FULL_SHARD"}}})
    return least, MAX_GPUS_PER_NODE, MAX_NODES


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    model=st.sampled_from(sorted(SHAPES)),
    algorithm=st.sampled_from(["sft", "osft", "lora_sft"]),
    tokens=st.integers(16, 64).map(lambda k: k * 1024),
    gib=st.sampled_from([24.0, 40.0, 80.0]),
)
@example(model="llama-3.1-70b", algorithm="sft", tokens=64 * 1024, gib=24.0)  # refused: each method once, for sure
@example(model="llama-3.1-8b", algorithm="osft", tokens=64 * 1024, gib=24.0)
@example(model="llama-3.1-8b", algorithm="lora_sft", tokens=64 * 1024, gib=24.0)
def test_a_suggested_value_fits_when_planned_again(model, algorithm, tokens, gib):
    params = {"max_seq_len": 2048, "max_tokens_per_gpu": tokens} if algorithm != "lora_sft" else {"max_seq_len": tokens // 8}
    params |= {"unfreeze_rank_ratio": 0.25} if algorithm == "osft" else {"micro_batch_size": 8} if algorithm == "lora_sft" else {}
    plan = plan_memory(spec(algorithm, **params), SHAPES[model], 2)
    if plan.total_gib <= gib:
        plan.check(gib)  # fits: no refusal
        return
    hint = _hint(plan, gib)
    if hint.startswith("no setting of this method fits"):
        least, gpus, nodes = _least(algorithm, params)
        assert plan_memory(least, SHAPES[model], gpus, nodes).total_gib > gib
        return
    if hint.startswith("a method that needs less memory"):
        seq_len = 2048 if algorithm != "lora_sft" else tokens // 8
        lora = spec("lora_sft", load_in_4bit=True, micro_batch_size=1, max_seq_len=seq_len)
        assert plan_memory(lora, SHAPES[model], 2).total_gib <= gib
        return
    changed = _suggested(hint)
    assert changed, hint
    layout = {"gpus_per_node": changed.pop("gpus", 2), "nnodes": changed.pop("nnodes", 1)}
    changed_spec = spec(algorithm, **{**params, **changed})
    if "sharding_strategy FULL_SHARD" in hint:
        changed_spec = changed_spec.model_copy(update={"backend_kwargs": {"fsdp_options": {"sharding_strategy": "FULL_SHARD"}}})
    again = plan_memory(changed_spec, SHAPES[model], **layout)
    assert again.total_gib <= gib
    if algorithm == "lora_sft":
        assert changed.get("max_seq_len", tokens // 8) >= 256 and changed.get("micro_batch_size", 8) >= 1
    else:
        assert changed["max_tokens_per_gpu"] >= 2048 if "max_tokens_per_gpu" in changed else again.settings.tokens == tokens


def test_lora_adapters_are_the_parameters_peft_adds():
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from kubetune.memory.shape import ModelShape

    config = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=160, num_hidden_layers=3, num_attention_heads=4,
                         num_key_value_heads=2, tie_word_embeddings=False)  # fmt: skip
    shape = ModelShape(config.to_dict(), "tiny")
    for targets in (None, ["q_proj", "v_proj"]):
        with torch.device("meta"):
            model = get_peft_model(LlamaForCausalLM(config), LoraConfig(r=8, target_modules=targets or "all-linear"))
        adapters = sum(p.numel() for p in model.parameters() if p.requires_grad)
        plan = plan_memory(spec("lora_sft", lora_r=8, max_seq_len=128, **({"target_modules": targets} if targets else {})), shape)
        assert plan.parts["gradients"] == adapters * 4  # float32 adapters
    # modules_to_save (the embedded demo trains the random tiny model's embeddings and head): PEFT's trained copies
    saving = ["lm_head", "embed_tokens"]
    with torch.device("meta"):
        model = get_peft_model(LlamaForCausalLM(config), LoraConfig(r=8, target_modules="all-linear", modules_to_save=saving))
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    plan = plan_memory(spec("lora_sft", lora_r=8, max_seq_len=128, modules_to_save=[*saving, "norm"]), shape)
    assert plan.parts["gradients"] == trained * 4
    assert any("modules_to_save ['norm']: not counted" in note for note in plan.notes)


def test_osft_trains_the_share_of_each_matrix_that_mini_trainer_unfreezes():
    import torch
    from mini_trainer.osft_utils import auto_generate_target_osft_config
    from transformers import LlamaConfig, LlamaForCausalLM

    from kubetune.memory.shape import ModelShape
    from kubetune.memory.trace import count_parameters

    config = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2)  # fmt: skip
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    shape = ModelShape(config.to_dict(), "tiny")
    top_k = auto_generate_target_osft_config(model, "llama", rank_ratio=1 - 0.3)  # osft_unfreeze_rank_ratio=0.3
    shapes = dict(model.named_parameters())
    low = sum((min(shapes[n].shape) - k) * (sum(shapes[n].shape) + 1) for n, k in top_k.items())
    targeted = sum(shapes[n].numel() for n in top_k)
    plan = plan_memory(spec("osft", max_seq_len=128, max_tokens_per_gpu=256, unfreeze_rank_ratio=0.3), shape)
    trained = count_parameters(shape).total - targeted + low
    assert plan.parts["gradients"] == trained * 4  # mini-trainer's train_dtype: float32, one rank


def test_a_suggestion_that_cannot_be_planned_leaves_the_refusal_without_one():
    from dataclasses import replace

    plan = plan_memory(spec("lora_sft", max_seq_len=64), read_model_shape("kubetune://tiny-llama"))

    def failing(*_):
        raise RuntimeError("a setting the trace cannot run")

    with pytest.raises(KubetuneError) as refused:
        replace(plan, suggest=failing).check(0.01)
    assert refused.value.problems[0].hint == "no suggestion: planning another setting failed (RuntimeError)"
