"""The memory plan: the peak GPU memory per rank of one training step, computed before any GPU is requested from
the model's ``config.json`` alone (``shape``), measured where PyTorch can trace it (``trace``), computed where it
cannot (``plan``: FSDP sharding, gathered units, the CUDA allowance), with a refusal and a suggestion (``suggest``)
when it exceeds the GPU's memory (``accelerators``)."""

from kubetune.memory.accelerators import gpu_memory_gib
from kubetune.memory.plan import plan_memory
from kubetune.memory.report import MemoryPlan, Part
from kubetune.memory.shape import ModelShape, ShapeUnavailable, read_model_shape

__all__ = ["MemoryPlan", "ModelShape", "Part", "ShapeUnavailable", "gpu_memory_gib", "plan_memory", "read_model_shape"]
