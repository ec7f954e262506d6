"""What of a spec decides its memory, read the way each backend reads it (instructlab-training 0.16.2, mini-trainer
0.9.0, TRL 1.16 + PEFT / Unsloth), as one typed ``Settings``."""

from __future__ import annotations

from dataclasses import dataclass

from kubetune.contract import TrainingSpec


@dataclass(frozen=True)
class Settings:
    """One training step's memory-relevant settings on each rank."""

    algorithm: str
    tokens: int  # tokens of one micro-batch on one GPU
    param_shards: int  # ranks the parameters are sharded over (1: a full copy on each)
    state_shards: int  # ranks the gradients and optimizer states are sharded over
    storage_dtype: str  # the parameters as stored (and their gradients and AdamW states)
    compute_dtype: str  # what forward and backward run in
    checkpointing: bool
    liger: bool
    micro_batch: int = 1
    seq_len: int = 0
    lora_r: int = 0
    lora_targets: str | tuple[str, ...] = ()
    lora_dropout: float = 0.0
    quant_bits: int = 16  # lora_sft: 4 or 8 with load_in_4bit/8bit (bitsandbytes), else 16 (the base as stored)
    upcast_unquantized: bool = False  # PEFT's prepare_model_for_kbit_training casts the rest to float32
    lora_modules_to_save: tuple[str, ...] = ()  # PEFT trains a full copy of each (its gradient and AdamW states too)
    lora_saved_params: int = 0  # their parameters, from the model's shape (plan_memory)
    osft: bool = False
    unfreeze_rank_ratio: float = 1.0
    osft_patterns: tuple[str, ...] = ()


def settings_of(spec: TrainingSpec, checkpoint_dtype: str, gpus_per_node: int, nnodes: int) -> Settings:
    """``spec``'s settings on ``nnodes`` nodes of ``gpus_per_node`` GPUs; ``checkpoint_dtype``: the model's own dtype
    (transformers 5 loads a model in it when no dtype is asked for, as instructlab-training and TRL do)."""
    p, kw = spec.params, spec.backend_kwargs
    world = gpus_per_node * nnodes
    if spec.algorithm == "sft":  # instructlab-training: FSDP1 via accelerate, bf16 mixed precision, AdamW
        strategy = str((kw.get("fsdp_options") or {}).get("sharding_strategy", "HYBRID_SHARD"))  # config.py:172
        params_over = {"FULL_SHARD": world, "HYBRID_SHARD": gpus_per_node, "SHARD_GRAD_OP": 1, "NO_SHARD": 1}
        states_over = {"FULL_SHARD": world, "HYBRID_SHARD": gpus_per_node, "SHARD_GRAD_OP": world, "NO_SHARD": 1}
        return Settings(
            "sft",
            tokens=p.get("max_tokens_per_gpu") or p["max_seq_len"],  # kubetune's default max_batch_len: max_seq_len
            param_shards=params_over.get(strategy, world),
            state_shards=states_over.get(strategy, world),
            storage_dtype=checkpoint_dtype,
            compute_dtype="bfloat16",
            checkpointing=True,  # model.py: gradient_checkpointing_enable() for every model that supports it
            liger=bool(p.get("use_liger")),
        )
    if spec.algorithm == "osft":  # mini-trainer: FSDP2 over all ranks, param_dtype bf16, reduce fp32, per-block AC
        patterns = tuple(p.get("target_patterns") or ())
        return Settings(
            "osft",
            tokens=p["max_tokens_per_gpu"],
            param_shards=world,
            state_shards=world,
            storage_dtype=str(kw.get("train_dtype") or "float32"),  # training_types.py: train_dtype="float32"
            compute_dtype="bfloat16",
            checkpointing=True,  # setup_model_for_training.py: ptd_checkpoint_wrapper on every block
            liger=bool(p.get("use_liger")),
            osft=bool(kw.get("osft", True)),
            unfreeze_rank_ratio=float(p.get("unfreeze_rank_ratio") or 1.0),
            osft_patterns=patterns,
        )
    # lora_sft: TRL's SFTTrainer with PEFT (or Unsloth), one full base model per process (kubetune.backends.lora)
    accum = p.get("gradient_accumulation_steps", 1)
    eff = p.get("effective_batch_size")
    micro = max(1, eff // (accum * world)) if eff else p.get("micro_batch_size", 2)
    seq_len = p.get("max_seq_len", 2048)
    bits = 4 if p.get("load_in_4bit") else 8 if p.get("load_in_8bit") else 16
    return Settings(
        "lora_sft",
        tokens=micro * seq_len,
        param_shards=1,
        state_shards=1,
        storage_dtype=checkpoint_dtype,
        compute_dtype="bfloat16" if not p.get("fp16") else "float16",
        checkpointing=bool(kw.get("gradient_checkpointing", True)),  # TRL's SFTConfig default; Unsloth's "unsloth" mode
        liger=bool(kw.get("use_liger_kernel")),
        micro_batch=micro,
        seq_len=seq_len,
        lora_r=p.get("lora_r", 16),
        lora_dropout=float(p.get("lora_dropout") or 0.0),
        lora_targets=tuple(p["target_modules"]) if p.get("target_modules") else "all-linear",
        quant_bits=bits,
        upcast_unquantized=bits < 16 and spec.backend in ("peft", "trl"),
        lora_modules_to_save=tuple(p.get("modules_to_save") or ()),
    )
