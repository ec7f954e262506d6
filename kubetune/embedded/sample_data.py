"""Deterministic generator of the bundled chat dataset (``kubetune/data/sample_chat.jsonl``).

The examples are simple, learnable tasks (arithmetic, word games, short Kubernetes facts) so that a
tiny model's validation loss visibly falls during a CPU run. Regenerate with
``python -m kubetune.embedded.sample_data``; a test checks the shipped file matches.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

SAMPLE_DATA = Path(__file__).resolve().parent.parent / "data" / "sample_chat.jsonl"

_WORDS = [
    "red",
    "green",
    "blue",
    "cat",
    "dog",
    "bird",
    "tree",
    "river",
    "stone",
    "cloud",
    "train",
    "model",
    "data",
    "node",
    "pod",
    "gpu",
]
_FACTS = [
    ("What does a PersistentVolumeClaim give a pod?", "A PersistentVolumeClaim gives a pod durable storage."),
    ("Which object runs a batch job to completion?", "A Job runs pods until they complete."),
    ("What does a Secret hold?", "A Secret holds credentials, referenced by name."),
    ("What schedules pods onto nodes?", "The scheduler places pods onto nodes."),
    ("What is a KFP component?", "A KFP component is one containerized step of a pipeline."),
    ("What is LoRA?", "LoRA trains small low-rank adapters instead of all weights."),
    ("What does validation loss tell you?", "Validation loss shows when training starts to overfit."),
    ("Why mount /dev/shm for training?", "Shared memory lets data loader workers pass tensors quickly."),
]
_SYSTEM = "You are a concise assistant."


def _arithmetic(rng: random.Random) -> list[dict[str, str]]:
    a, b = rng.randint(0, 50), rng.randint(0, 50)
    if rng.random() < 0.5:
        return [
            {"role": "user", "content": f"What is {a} plus {b}?"},
            {"role": "assistant", "content": f"{a} plus {b} is {a + b}."},
        ]
    a, b = max(a, b), min(a, b)
    return [
        {"role": "user", "content": f"What is {a} minus {b}?"},
        {"role": "assistant", "content": f"{a} minus {b} is {a - b}."},
    ]


def _reverse(rng: random.Random) -> list[dict[str, str]]:
    words = rng.sample(_WORDS, rng.randint(2, 5))
    return [
        {"role": "user", "content": "Reverse the words: " + " ".join(words)},
        {"role": "assistant", "content": " ".join(reversed(words))},
    ]


def _upper(rng: random.Random) -> list[dict[str, str]]:
    words = rng.sample(_WORDS, rng.randint(1, 4))
    return [
        {"role": "user", "content": "Write in capital letters: " + " ".join(words)},
        {"role": "assistant", "content": " ".join(words).upper()},
    ]


def _fact(rng: random.Random) -> list[dict[str, str]]:
    question, answer = rng.choice(_FACTS)
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


def _multi_turn(rng: random.Random) -> list[dict[str, str]]:
    return _arithmetic(rng) + _reverse(rng)


def generate(n: int = 320, seed: int = 1234) -> Iterator[dict]:
    """Yield ``n`` chat samples in ``messages`` format, the same ones for the same seed."""
    rng = random.Random(seed)
    makers = [_arithmetic, _reverse, _upper, _fact, _multi_turn]
    for _ in range(n):
        messages = rng.choice(makers)(rng)
        if rng.random() < 0.3:
            messages = [{"role": "system", "content": _SYSTEM}, *messages]
        yield {"messages": messages}


def write(path: Path = SAMPLE_DATA, n: int = 320, seed: int = 1234) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for sample in generate(n, seed):
            f.write(json.dumps(sample, ensure_ascii=False) + "\n")
    return path


if __name__ == "__main__":
    print(write())
