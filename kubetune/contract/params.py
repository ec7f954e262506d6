"""Curated parameters per algorithm, under Training Hub's names: these models are the documentation.

Every named parameter of training-hub's ``sft()``, ``osft()`` and ``lora_sft()`` (the release in
``snapshots/training-hub.json``) is here or means something else a spec says, so an existing call becomes a kubetune
spec unchanged (``tests/contract/test_hub.py`` holds it to the release's signatures). Experiment tracking and torchrun
settings are first-class on every algorithm. Anything not named here is a backend kwarg, checked against
the backend's own fields.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
Probability = Annotated[float, Field(ge=0, lt=1)]
# torch's floating dtype names (BitsAndBytesConfig reads ``getattr(torch, name)`` when the model loads)
ComputeDtype = Literal["bfloat16", "float16", "half", "float32", "float", "float64", "double"]


def _nproc(value: Any) -> int | str:
    """Training Hub's reading of ``nproc_per_node`` (``str | int``): ``"8"`` is 8, ``" GPU"`` is ``"gpu"``."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    elif isinstance(value, str):
        value = value.strip().lower()
    if value in ("auto", "gpu") or (isinstance(value, int) and not isinstance(value, bool) and value > 0):
        return value
    raise PydanticCustomError("nproc_per_node", 'must be a positive count (2 or "2"), "auto" or "gpu"')


def _storage(value: Any) -> str:
    """``checkpoint_storage``: ``"pvc"`` (the filesystem, Training Hub's default) or an ``s3://`` / ``gs://``
    bucket URI without credentials, query or fragment (Training Hub also takes other fsspec URIs). An empty
    string means "pvc", as in Training Hub (``resolve_checkpoint_storage``)."""
    if value == "":
        return "pvc"
    if value == "pvc" or (isinstance(value, str) and re.fullmatch(r"(s3|gs)://[^/?#@:\s]+(/[^?#@\s]*)?", value)):
        return value
    raise PydanticCustomError(
        "checkpoint_storage", 'must be "pvc" or an s3://bucket/prefix or gs://bucket/prefix URI without credentials or query'
    )


NprocPerNode = Annotated[
    int | str,
    PlainValidator(_nproc),
    WithJsonSchema({"anyOf": [{"type": "integer", "minimum": 1}, {"type": "string"}]}),
]
CheckpointStorage = Annotated[
    str, PlainValidator(_storage), WithJsonSchema({"type": "string", "pattern": "^(|pvc|(s3|gs)://[^/?#@:\\s]+(/[^?#@\\s]*)?)$"})
]


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class TrackingParams(_Params):
    """Experiment tracking: set any of them to enable that tracker (credentials go under ``secrets``)."""

    wandb_project: str | None = Field(None, description="Weights & Biases project.")
    wandb_entity: str | None = Field(None, description="Weights & Biases team or user.")
    wandb_run_name: str | None = Field(None, description="Weights & Biases run name.")
    mlflow_tracking_uri: str | None = Field(None, description="MLflow tracking server URI (no credentials).")
    mlflow_experiment_name: str | None = Field(None, description="MLflow experiment name.")
    mlflow_run_name: str | None = Field(None, description="MLflow run name.")
    tensorboard_log_dir: str | None = Field(None, description="Directory for TensorBoard event files.")


class TorchrunParams(_Params):
    """torchrun launch settings (single node, all local GPUs by default)."""

    nproc_per_node: NprocPerNode | None = Field(
        None, description='Processes per node: a count (2 or "2"), or "auto"/"gpu" for every local GPU.'
    )
    nnodes: PositiveInt | None = Field(None, description="Number of nodes.")
    node_rank: NonNegativeInt | None = Field(None, description="Rank of this node, 0..nnodes-1.")
    rdzv_id: str | int | None = Field(None, description="Rendezvous job id.")
    rdzv_endpoint: str | None = Field(None, description="Rendezvous endpoint host:port.")
    master_addr: str | None = Field(None, description="Master address (static rendezvous).")
    master_port: Annotated[int, Field(ge=1, le=65535)] | None = Field(None, description="Master port.")


class CheckpointParams(_Params):
    """Training Hub's checkpointing switches, on every algorithm."""

    enable_jit_checkpoint: bool | None = Field(
        None,
        description="On SIGTERM, save a checkpoint and stop; a restart resumes from it. Default here: true "
        "(Training Hub: false); false: SIGTERM stops training without a save.",
    )
    checkpoint_storage: CheckpointStorage | None = Field(
        None,
        description='"pvc": checkpoints stay on the filesystem (the default). s3://bucket/prefix: every complete '
        "save is mirrored there (an .upload_complete marker written last) and a fresh pod restores the newest "
        "before training. gs:// is refused (no GCS layer).",
    )


class CommonParams(TrackingParams, TorchrunParams, CheckpointParams):
    """Parameters every algorithm takes."""

    model_path: str | None = Field(None, description="Base model: local/PVC path or hub id.")
    data_path: str | None = Field(None, description="Training data (JSONL in messages format).")
    ckpt_output_dir: str | None = Field(None, description="Where checkpoints and logs are written.")
    data_output_dir: str | None = Field(None, description="Where processed data is written.")
    num_epochs: PositiveInt | None = Field(None, description="Number of epochs.")
    effective_batch_size: PositiveInt | None = Field(None, description="Samples per optimizer step, all GPUs.")
    learning_rate: PositiveFloat | None = Field(None, description="Peak learning rate.")
    max_seq_len: PositiveInt | None = Field(None, description="Longest sample in tokens.")
    max_tokens_per_gpu: PositiveInt | None = Field(None, description="Token cap per GPU mini-batch.")
    warmup_steps: NonNegativeInt | None = Field(None, description="Learning-rate warmup steps.")
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] | None = Field(None, description="Random seed, 0..2^32-1.")


class _AdamWParams(_Params):
    beta1: Probability | None = Field(None, description="AdamW beta1.")
    beta2: Probability | None = Field(None, description="AdamW beta2.")
    eps: PositiveFloat | None = Field(None, description="AdamW epsilon.")
    weight_decay: Annotated[float, Field(ge=0)] | None = Field(None, description="AdamW weight decay.")


class _PretrainingParams(_Params):
    is_pretraining: bool | None = Field(None, description="Document-style continual pretraining.")
    block_size: PositiveInt | None = Field(None, description="Tokens per block; required when pretraining.")
    document_column_name: str | None = Field(None, description='Document column (default "document").')


class SFTParams(CommonParams, _AdamWParams, _PretrainingParams):
    """``sft``: full fine-tuning through instructlab-training."""

    save_samples: NonNegativeInt | None = Field(None, description="Checkpoint every N samples (0: off).")
    accelerate_full_state_at_epoch: bool | None = Field(None, description="Save resumable state each epoch.")
    checkpoint_at_epoch: bool | None = Field(None, description="Save a checkpoint each epoch.")


class OSFTParams(CommonParams, _AdamWParams, _PretrainingParams):
    """``osft``: orthogonal-subspace fine-tuning through mini-trainer."""

    unfreeze_rank_ratio: Annotated[float, Field(gt=0, le=1)] | None = Field(
        None, description="Share of each matrix's rank that is trained, in (0, 1]."
    )
    target_patterns: list[str] | None = Field(None, description="Module name patterns to apply OSFT to.")
    use_liger: bool | None = Field(None, description="Use Liger kernels.")
    use_processed_dataset: bool | None = Field(None, description="data_path already holds input_ids/labels.")
    unmask_messages: bool | None = Field(None, description="Train on all messages, not only the assistant's.")
    lr_scheduler: str | None = Field(None, description="PyTorch LR scheduler name.")
    lr_scheduler_kwargs: dict | None = Field(None, description="Extra scheduler arguments.")
    checkpoint_at_epoch: bool | None = Field(None, description="Save a checkpoint each epoch.")
    save_final_checkpoint: bool | None = Field(None, description="Save a checkpoint when training ends.")
    trust_remote_code: bool | None = Field(None, description="Allow custom model code.")


class LoRASFTParams(CommonParams):
    """``lora_sft``: LoRA through Unsloth + TRL (PEFT + TRL where CUDA is absent)."""

    lora_r: PositiveInt | None = Field(None, description="LoRA rank.")
    lora_alpha: PositiveInt | None = Field(None, description="LoRA alpha.")
    lora_dropout: Probability | None = Field(None, description="LoRA dropout in [0, 1).")
    target_modules: list[str] | None = Field(None, description="Modules that get adapters.")
    micro_batch_size: PositiveInt | None = Field(None, description="Per-device batch size.")
    gradient_accumulation_steps: PositiveInt | None = Field(None, description="Micro-batches per step.")
    lr_scheduler: str | None = Field(None, description="Scheduler name (TRL lr_scheduler_type).")
    load_in_4bit: bool | None = Field(None, description="QLoRA: load the base model in 4 bits (CUDA).")
    load_in_8bit: bool | None = Field(None, description="Load the base model in 8 bits (CUDA).")
    bnb_4bit_quant_type: Literal["nf4", "fp4"] | None = Field(None, description="4-bit quantization type.")
    bnb_4bit_compute_dtype: ComputeDtype | None = Field(None, description="Compute dtype for 4-bit layers (a torch dtype).")
    bnb_4bit_use_double_quant: bool | None = Field(None, description="Nested quantization.")
    flash_attention: bool | None = Field(None, description="Use flash attention where available.")
    sample_packing: bool | None = Field(None, description="Pack samples into full sequences (TRL packing).")
    bf16: bool | None = Field(None, description="bfloat16 mixed precision.")
    fp16: bool | None = Field(None, description="float16 mixed precision.")
    tf32: bool | None = Field(None, description="TensorFloat-32 matmuls.")
    save_steps: PositiveInt | None = Field(None, description="Checkpoint every N steps.")
    eval_steps: PositiveInt | None = Field(None, description="Evaluate every N steps.")
    logging_steps: PositiveInt | None = Field(None, description="Log every N steps.")
    save_total_limit: PositiveInt | None = Field(None, description="Keep at most N checkpoints.")
    dataset_type: Literal["chat_template", "alpaca", "passthrough"] | None = Field(None, description="Data format.")
    field_messages: str | None = Field(None, description="Column with chat messages.")
    field_instruction: str | None = Field(None, description="Alpaca instruction column.")
    field_input: str | None = Field(None, description="Alpaca input column.")
    field_output: str | None = Field(None, description="Alpaca output column.")
    enable_model_splitting: bool | None = Field(None, description='device_map="balanced" for large models.')
    eval_data_path: str | None = Field(
        None,
        description="Validation data: TRL evaluates on it during training (every eval_steps, default 500). "
        "In a pipeline it is the prepared validation split (validation_uri or validation_ratio).",
    )
    finetune_vision_layers: bool | None = Field(
        None, description="Unsloth's vision-model option: only false (text data reaches no vision layer)."
    )
    finetune_language_layers: bool | None = Field(
        None, description="Unsloth's vision-model option: only true (LoRA trains the language layers)."
    )
    trust_remote_code: bool | None = Field(None, description="Allow custom model code when loading the model.")


# Parameters a Training Hub call must give (paths are bound by the pipeline when it runs the step).
REQUIRED: dict[str, tuple[str, ...]] = {
    "sft": ("max_seq_len", "effective_batch_size", "learning_rate"),
    "osft": ("effective_batch_size", "max_tokens_per_gpu", "max_seq_len", "learning_rate"),
    "lora_sft": (),
}
PATH_PARAMS = ("model_path", "data_path", "ckpt_output_dir")
# curated parameters that name a file or directory: an empty or blank string is refused, never "given"
PATH_FIELDS = (*PATH_PARAMS, "data_output_dir", "eval_data_path")
