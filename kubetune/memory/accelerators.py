"""A GPU's memory in GiB: stated, or derived from the accelerator's resource name (MIG profiles say it:
``nvidia.com/mig-3g.40gb``) or from the node selector's ``nvidia.com/gpu.product`` label (NVIDIA GPU feature
discovery's names, e.g. ``NVIDIA-A100-SXM4-80GB``, ``NVIDIA-H100-80GB-HBM3``, ``NVIDIA-L40S``, ``Tesla-T4``).

Values are what CUDA reports as the card's total memory (a little under the size it is sold as), rounded down.
"""

from __future__ import annotations

import re
from typing import Any

PRODUCT_LABEL = "nvidia.com/gpu.product"
UNKNOWN = (
    "GPU memory unknown: no verdict; give gpu_memory_gib (kubetune: --gpu-memory), or an accelerator_type or "
    f"node selector {PRODUCT_LABEL} that names the card"
)
# cards whose product name does not carry their size; checked in this order (the longer names first)
CARDS = (
    ("H200", 139.8), ("H100-NVL", 93.1), ("H100", 79.1), ("GB200", 184.0), ("B200", 178.4),
    ("A100", 79.1), ("L40S", 44.4), ("L40", 44.4), ("L4", 22.0), ("A10G", 22.0), ("A10", 22.0), ("A30", 23.5),
    ("A40", 44.4), ("RTX-A6000", 47.4), ("V100", 15.7), ("T4", 14.5), ("MI300X", 191.5), ("MI250", 63.9),
)  # fmt: skip
GH200_HBM3, GH200_HBM3E = 94.5, 141.8  # Grace Hopper: 96 GB HBM3 or 144 GB HBM3e beside the Grace CPU's memory
MIG = re.compile(r"mig-(\d+)g\.(\d+)gb", re.IGNORECASE)
SIZED = re.compile(r"(\d+)GB", re.IGNORECASE)


def gpu_memory_gib(
    explicit: float | None = None, accelerator_type: str = "", node_selector: dict[str, Any] | None = None
) -> float | None:
    """The GPU memory a plan is checked against: ``explicit`` when given (> 0), else the card that
    ``accelerator_type`` or the node selector names; None when none says it."""
    if explicit:
        return float(explicit)
    for name in (accelerator_type or "", str((node_selector or {}).get(PRODUCT_LABEL, ""))):
        found = card_memory_gib(name)
        if found:
            return found
    return None


def card_memory_gib(name: str) -> float | None:
    """The memory of the card or MIG slice ``name`` names, or None."""
    if mig := MIG.search(name):
        return round(int(mig.group(2)) * 0.98, 1)  # a MIG slice's "40gb" is about 39.2 GiB to CUDA
    if re.search(r"(^|[-/ ._])GH200($|[-/ ._])", name.upper()):  # "480GB" is CPU + GPU memory; the GPU has 96 or 144 GB
        return GH200_HBM3E if "144G" in name.upper() else GH200_HBM3
    if sized := SIZED.search(name):
        return round(int(sized.group(1)) * 0.985, 1)
    upper = name.upper()
    for card, gib in CARDS:
        if re.search(rf"(^|[-/ ._]){re.escape(card)}($|[-/ ._])", upper):
            return gib
    return None
