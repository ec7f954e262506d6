"""The lora_sft backend's choice of path: Unsloth, or PEFT + TRL."""

from kubetune.validation import validate_spec


def test_lora_backend_peft_and_trl_never_use_unsloth(monkeypatch):
    """``peft`` and ``trl`` name the PEFT + TRL path even where Unsloth is usable; ``unsloth`` (Training Hub's only
    lora_sft backend) uses it there."""
    from kubetune.backends import lora

    monkeypatch.setattr(lora, "unsloth_usable", lambda: True)  # what a CUDA machine with Unsloth answers
    chosen = {}
    for name in ("unsloth", "peft", "trl"):
        spec = validate_spec({"algorithm": "lora_sft", "backend": name}, require_paths=False)
        chosen[name] = lora.uses_unsloth(spec)
    assert chosen == {"unsloth": True, "peft": False, "trl": False}
