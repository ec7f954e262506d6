"""Validation-loss evaluation: held-out loss on assistant tokens for every checkpoint, and the best one.

Loss is the mean cross-entropy over tokens whose label is not -100 (the same masking as training),
computed without gradients over length-sorted batches. A LoRA checkpoint is loaded on its base model.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from kubetune.data import tokenized_file
from kubetune.data.tokenize import IGNORE_INDEX, read_jsonl, tokenize_samples


@dataclass
class LossPoint:
    checkpoint: str  # path relative to the training output
    step: int | None
    loss: float
    perplexity: float
    tokens: int


def find_checkpoints(output_dir: str | Path) -> list[Path]:
    """Checkpoints in the backends' layouts (TRL ``checkpoint-N``, ``hf_format/samples_N``) plus ``final``."""
    root = Path(output_dir)
    found = [p.parent for p in root.rglob("config.json")] + [p.parent for p in root.rglob("adapter_config.json")]
    found = [p for p in set(found) if "base" not in p.relative_to(root).parts]
    return sorted(found, key=lambda p: (_step(p) is None, _step(p) or 0, str(p)))


def _step(path: Path) -> int | None:
    match = re.search(r"(?:checkpoint-|samples_)(\d+)", path.name)
    return int(match.group(1)) if match else None


def load_for_eval(path: Path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if (path / "adapter_config.json").exists():
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    else:
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    return model.eval(), AutoTokenizer.from_pretrained(str(path))


def held_out_loss(model, tokenizer, samples: list[dict], batch_size: int = 8) -> tuple[float, int]:
    """Mean loss over assistant tokens of already tokenized samples, and the number of tokens counted."""
    import torch
    import torch.nn.functional as F

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ordered = sorted(samples, key=lambda s: len(s["input_ids"]))
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(ordered), batch_size):
            batch = ordered[i : i + batch_size]
            width = max(len(s["input_ids"]) for s in batch)
            ids = torch.full((len(batch), width), pad)
            labels = torch.full((len(batch), width), IGNORE_INDEX)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, s in enumerate(batch):
                n = len(s["input_ids"])
                ids[row, :n] = torch.tensor(s["input_ids"])
                labels[row, :n] = torch.tensor(s["labels"])
                mask[row, :n] = 1
            logits = model(input_ids=ids, attention_mask=mask).logits.float()
            shifted = labels[:, 1:]
            total += F.cross_entropy(
                logits[:, :-1].reshape(-1, logits.size(-1)),
                shifted.reshape(-1),
                ignore_index=IGNORE_INDEX,
                reduction="sum",
            ).item()
            count += int((shifted != IGNORE_INDEX).sum())
    return (total / count if count else float("nan")), count


def evaluate(output_dir: str | Path, validation_path: str | Path, max_seq_len: int | None = None) -> list[LossPoint]:
    """One loss point per checkpoint under ``output_dir``, in training order (final last)."""
    root = Path(output_dir)
    rows = list(read_jsonl(tokenized_file(validation_path)))
    points = []
    for path in find_checkpoints(root):
        model, tokenizer = load_for_eval(path)
        samples, _ = tokenize_samples(tokenizer, rows, max_seq_len)
        loss, tokens = held_out_loss(model, tokenizer, samples)
        points.append(LossPoint(str(path.relative_to(root)), _step(path), loss, math.exp(min(loss, 50)), tokens))
    return points


def best(points: list[LossPoint]) -> LossPoint:
    finite = [p for p in points if math.isfinite(p.loss)]
    if not finite:
        raise ValueError("no checkpoint has a finite validation loss")
    return min(finite, key=lambda p: p.loss)


def as_dicts(points: list[LossPoint]) -> list[dict]:
    return [asdict(p) for p in points]
