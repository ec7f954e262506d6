"""A GPU's memory: stated, from a MIG profile's name, or from the GPU feature discovery product label."""

import pytest

from kubetune.memory import gpu_memory_gib


@pytest.mark.parametrize(
    ("accelerator_type", "product", "gib"),
    [
        ("nvidia.com/mig-3g.40gb", "", 39.2),
        ("nvidia.com/mig-1g.10gb", "NVIDIA-H100-80GB-HBM3", 9.8),  # the slice asked for, not the card
        ("nvidia.com/gpu", "NVIDIA-A100-SXM4-80GB", 78.8),
        ("nvidia.com/gpu", "NVIDIA-H100-80GB-HBM3", 78.8),
        ("nvidia.com/gpu", "NVIDIA-H200", 139.8),
        ("nvidia.com/gpu", "NVIDIA-GH200-480GB", 94.5),  # 480 GB: the Grace CPU's memory and the GPU's together
        ("nvidia.com/gpu", "NVIDIA-GH200-144G-HBM3e", 141.8),
        ("nvidia.com/gpu", "NVIDIA-L40S", 44.4),
        ("nvidia.com/gpu", "NVIDIA-L4", 22.0),
        ("nvidia.com/gpu", "NVIDIA-A10G", 22.0),
        ("nvidia.com/gpu", "Tesla-T4", 14.5),
        ("nvidia.com/gpu", "", None),
        ("nvidia.com/gpu", "Some-Future-Card", None),
    ],
)
def test_the_memory_of_common_cards(accelerator_type, product, gib):
    selector = {"nvidia.com/gpu.product": product} if product else {}
    assert gpu_memory_gib(None, accelerator_type, selector) == gib


def test_a_stated_value_wins():
    assert gpu_memory_gib(24.0, "nvidia.com/mig-3g.40gb") == 24.0
