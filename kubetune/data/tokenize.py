"""Tokenize chat samples with the model's own chat template, labels masked to assistant turns.

Works with any chat template (no ``{% generation %}`` markers needed): each assistant turn's characters
are located by rendering the conversation prefix before and after that turn, then mapped to tokens
through the fast tokenizer's offsets. Tokens outside assistant turns get label ``-100``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

IGNORE_INDEX = -100


def _render(tokenizer, messages: list[dict], generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def assistant_spans(tokenizer, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of its assistant turns."""
    text = _render(tokenizer, messages)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = len(_render(tokenizer, messages[:i], generation_prompt=True)) if i else 0
        end = len(_render(tokenizer, messages[: i + 1]))
        if text[:end] != _render(tokenizer, messages[: i + 1]):
            raise ValueError("the chat template renders a conversation prefix differently from the whole")
        spans.append((start, end))
    return text, spans


def tokenize_sample(tokenizer, sample: dict[str, Any]) -> dict[str, list[int]]:
    """``input_ids`` and ``labels`` for one ``{"messages": [...], "unmask"?: bool}`` sample."""
    text, spans = assistant_spans(tokenizer, sample["messages"])
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    input_ids = encoded["input_ids"]
    if sample.get("unmask"):
        return {"input_ids": input_ids, "labels": list(input_ids)}
    labels = [
        tok if any(start <= lo < end for start, end in spans) else IGNORE_INDEX
        for tok, (lo, _hi) in zip(input_ids, encoded["offset_mapping"], strict=True)
    ]
    return {"input_ids": input_ids, "labels": labels}


def read_jsonl(path: str | Path) -> Iterator[dict]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def tokenize_samples(tokenizer, samples: Iterable[dict], max_seq_len: int | None = None) -> tuple[list[dict], int]:
    """Tokenized samples, dropping those longer than ``max_seq_len``; returns (samples, dropped count)."""
    out, dropped = [], 0
    for sample in samples:
        tokens = tokenize_sample(tokenizer, sample)
        if max_seq_len is not None and len(tokens["input_ids"]) > max_seq_len:
            dropped += 1
            continue
        out.append(tokens)
    return out, dropped
