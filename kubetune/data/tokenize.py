"""Tokenize records with the model's own chat template; labels cover what the model should learn.

Masking follows instructlab-training's rules, so every backend learns the same tokens:

- the ``content`` (and ``reasoning_content``, where the template renders it) of assistant turns is learned,
  plus the template's tokens after it up to and including the EOS token (e.g. ``<|im_end|>``);
- with ``"unmask": true`` the content of every turn except ``system`` is learned;
- an assistant turn that calls tools (``tool_calls``) is learned as the template renders it: everything after
  the assistant header (what ``add_generation_prompt`` adds) up to and including the EOS token. A template that
  does not render tool calls makes such a record unusable (reason ``tools_unsupported``), never a silent loss;
- everything else gets label ``-100``.

How: each learned field is wrapped in private-use marker characters tagged with its message's index,
the conversation is rendered once, the markers are located and removed, and the clean text is tokenized
by the fast tokenizer in one batched call, whose character-to-token map turns each span into tokens. This
works with any chat template that renders content verbatim, and the token ids are those of the text the
model sees at inference (instructlab-training tokenizes with marker *tokens* in the text, which forces a
token boundary at each marker; with templates that put a special token or a newline there, as usual, the
ids are the same).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

from kubetune.data.records import BadRecord, normalize

IGNORE_INDEX = -100

_CONTENT_BEGIN, _CONTENT_END, _REASONING_BEGIN, _REASONING_END = "\U000f0000", "\U000f0001", "\U000f0002", "\U000f0003"
_TAG0 = 0xF1000  # the message index rides on the character after a begin marker
_MARKER = re.compile("([\U000f0000\U000f0002])(.)|[\U000f0001\U000f0003]", re.DOTALL)
_RESERVED = re.compile("[\U000f0000-\U000f0003\U000f1000-\U000fffff]")


def _wrap(messages: list[dict], learned_roles: set[str]) -> list[dict]:
    has_reasoning = any(m.get("reasoning_content") is not None for m in messages if m["role"] in learned_roles)
    wrapped = []
    for i, message in enumerate(messages):
        if message["role"] not in learned_roles or "tool_calls" in message:  # a call's span is found by prefixes
            wrapped.append(message)
            continue
        tag = chr(_TAG0 + i)
        message = dict(message)
        for field, (begin, end) in (
            ("content", (_CONTENT_BEGIN, _CONTENT_END)),
            ("reasoning_content", (_REASONING_BEGIN, _REASONING_END)),
        ):
            value = message.get(field)
            if isinstance(value, str) and (field == "content" or has_reasoning):
                if _RESERVED.search(value):
                    raise BadRecord("bad_content", f"messages[{i}].{field} holds reserved private-use characters")
                message[field] = begin + tag + value + end
        wrapped.append(message)
    return wrapped


def _strip_markers(text: str) -> tuple[str, dict[int, tuple[int, int]]]:
    """The text without markers, and each message's learned character span (reasoning and content merged)."""
    pieces, spans, last, length, opened = [], {}, 0, 0, None
    for match in _MARKER.finditer(text):
        pieces.append(text[last : match.start()])
        length += match.start() - last
        last = match.end()
        if match.group(1):  # a begin marker
            if opened is not None:
                raise BadRecord("template_error", "the chat template nests or reorders message contents")
            opened = (match.group(1), ord(match.group(2)) - _TAG0, length)
            continue
        expected = _CONTENT_BEGIN if match.group(0) == _CONTENT_END else _REASONING_BEGIN
        if opened is None or opened[0] != expected:
            raise BadRecord("template_error", "the chat template changed a message's content")
        _, index, start = opened
        lo, hi = spans.get(index, (start, length))
        spans[index] = (min(lo, start), max(hi, length))
        opened = None
    if opened is not None:
        raise BadRecord("template_error", "the chat template cut a message's content")
    pieces.append(text[last:])
    return "".join(pieces), spans


class ChatEncoder:
    """Turns normalized records into ``input_ids``/``labels``, a batch at a time.

    Holds the Rust tokenizer, the compiled chat template and the special tokens the template sees:
    rendering is exactly ``apply_chat_template``'s (same compiled template, same variables), without its
    per-call overhead. ``load`` reads a local model's ``tokenizer.json`` and template without importing
    torch; anything else (a hub id, a slow-only tokenizer) goes through ``AutoTokenizer``.
    """

    def __init__(self, backend, chat_template: str | None, special_tokens: dict[str, Any]):
        self.backend = backend
        self.chat_template = chat_template
        self.special_tokens = special_tokens
        self.eos = special_tokens.get("eos_token")
        self.eos_id = backend.token_to_id(self.eos) if self.eos else None

    @classmethod
    def from_tokenizer(cls, tokenizer) -> ChatEncoder:
        """From a transformers fast tokenizer."""
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError("a fast tokenizer is required (its offsets map learned text onto tokens)")
        return cls(tokenizer.backend_tokenizer, tokenizer.chat_template, dict(tokenizer.special_tokens_map))

    @classmethod
    def load(cls, model_path: str | Path) -> ChatEncoder:
        path = Path(model_path)
        config_file = path / "tokenizer_config.json"
        if (path / "tokenizer.json").is_file() and config_file.is_file():
            from tokenizers import Tokenizer

            config = json.loads(config_file.read_text(encoding="utf-8"))
            template = (
                (path / "chat_template.jinja").read_text(encoding="utf-8") if (path / "chat_template.jinja").is_file() else None
            )
            template = template or config.get("chat_template")
            if isinstance(template, list):  # named templates: the default one renders conversations
                template = next((t["template"] for t in template if t.get("name") == "default"), None)
            special = {k: v.get("content") if isinstance(v, dict) else v for k, v in config.items() if k.endswith("_token")}
            special = {k: v for k, v in special.items() if isinstance(v, str)}
            return cls(Tokenizer.from_file(str(path / "tokenizer.json")), template, special)
        from transformers import AutoTokenizer

        return cls.from_tokenizer(AutoTokenizer.from_pretrained(str(model_path)))

    @cached_property
    def _template(self):
        if not self.chat_template:
            raise ValueError("the tokenizer has no chat template: chat data needs one (or use pretraining documents)")
        from transformers.utils.chat_template_utils import _compile_jinja_template  # what apply_chat_template uses

        return _compile_jinja_template(self.chat_template)

    def render(self, record: dict[str, Any]) -> tuple[str, list[tuple[int, int]]]:
        """The rendered conversation and the sorted character spans whose tokens are learned."""
        messages = record["messages"]
        learned = {m["role"] for m in messages} - {"system"} if record.get("unmask") else {"assistant"}
        calls = [i for i, m in enumerate(messages) if "tool_calls" in m]
        if calls and "tool_calls" not in (self.chat_template or ""):
            message = f"messages[{calls[0]}] calls a tool, and the model's chat template does not render tool calls"
            raise BadRecord("tools_unsupported", message)
        wrapped = _wrap(messages, learned)
        if any(key in m for m in wrapped for key in _REASONING_KEYS):
            wrapped = [_alias_reasoning(m) for m in wrapped]
        tools = record.get("tools")
        text, by_message = _strip_markers(self._render(wrapped, tools))
        for i in calls:
            by_message[i] = self._call_span(text, wrapped, tools, i)
        spans = sorted((span, messages[i]["role"], i in calls) for i, span in by_message.items())
        out = []
        for k, ((start, end), role, call) in enumerate(spans):
            if role == "assistant" and self.eos and not call:  # the end-of-turn token is learned too
                stop = spans[k + 1][0][0] if k + 1 < len(spans) else len(text)
                found = text.find(self.eos, end, stop)
                if found >= 0:
                    end = found + len(self.eos)
            out.append((start, end))
        return text, out

    def _render(self, messages: list[dict], tools: Any, add_generation_prompt: bool = False) -> str:
        try:
            return self._template.render(
                messages=messages, tools=tools, documents=None, add_generation_prompt=add_generation_prompt, **self.special_tokens
            )
        except Exception as e:  # a template raising on this conversation (jinja errors, raise_exception)
            raise BadRecord("template_error", f"the chat template failed: {_one_line(e)}") from None

    def _call_span(self, text: str, wrapped: list[dict], tools: Any, i: int) -> tuple[int, int]:
        """Where assistant turn ``i``, a tool call, is in ``text``: after the conversation before it and the
        assistant header, up to its EOS token (or the end of its turn)."""
        head, _ = _strip_markers(self._render(wrapped[:i], tools, add_generation_prompt=True))
        upto, _ = _strip_markers(self._render(wrapped[: i + 1], tools))
        if not (len(head) <= len(upto) and text.startswith(upto) and upto.startswith(head)):
            message = f"messages[{i}]: the chat template does not render turn by turn, so the tool call cannot be located"
            raise BadRecord("template_error", message)
        start, end = len(head), len(upto)
        names = [call["function"]["name"] for call in wrapped[i]["tool_calls"]]
        if not all(name in text[start:end] for name in names):
            raise BadRecord("tools_unsupported", f"messages[{i}] calls a tool, and the model's chat template does not render it")
        if self.eos and (found := text.rfind(self.eos, start, end)) >= 0:
            end = found + len(self.eos)
        return start, end

    def encode(self, records: list[dict[str, Any]]) -> list[dict[str, Any] | BadRecord]:
        """One result per record, in order: the tokenized sample, or why it cannot be used."""
        results: list[Any] = [None] * len(records)
        chats, docs = [], []
        for i, record in enumerate(records):
            if "document" in record:
                docs.append(i)
                continue
            try:
                chats.append((i, *self.render(record)))
            except BadRecord as e:
                results[i] = e
        if chats:
            encoded = self.backend.encode_batch([text for _, text, _ in chats], add_special_tokens=False)
            for (i, _, spans), enc in zip(chats, encoded, strict=True):
                ids = enc.ids
                results[i] = sample(ids, _span_labels(ids, enc, spans))
        if docs:
            encoded = self.backend.encode_batch_fast([records[i]["document"] for i in docs], add_special_tokens=True)
            for i, enc in zip(docs, encoded, strict=True):
                ids = enc.ids
                if self.eos_id is not None and (not ids or ids[-1] != self.eos_id):
                    ids.append(self.eos_id)
                results[i] = sample(ids, list(ids))
        return results


_REASONING_KEYS = ("reasoning_content", "thinking", "reasoning")


def _alias_reasoning(message: dict) -> dict:
    """As ``apply_chat_template`` does: reasoning is offered as both ``reasoning_content`` and ``thinking``."""
    reasoning = next((message[k] for k in _REASONING_KEYS if message.get(k) is not None), None)
    return message if reasoning is None else {"thinking": reasoning, **message, "reasoning_content": reasoning}


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= 200 else text[:197] + "..."


def _span_labels(ids: list[int], encoding, spans: list[tuple[int, int]]) -> list[int]:
    """Labels from the learned character spans, a span at a time: the tokens that start inside a span are
    learned. Uses the encoding's own char-to-token map; falls back to every token's offsets where a span
    edge maps to no token."""
    labels = [IGNORE_INDEX] * len(ids)
    for start, end in spans:
        if end <= start:
            continue
        first, last = encoding.char_to_token(start), encoding.char_to_token(end - 1)
        if first is None or last is None:
            return _labels(ids, encoding.offsets, spans)
        if encoding.token_to_chars(first)[0] < start:  # it began before the span: not learned
            first += 1
        labels[first : last + 1] = ids[first : last + 1]
    return labels


def _labels(ids: list[int], offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> list[int]:
    labels, k = [IGNORE_INDEX] * len(ids), 0
    for i, (lo, _hi) in enumerate(offsets):
        while k < len(spans) and spans[k][1] <= lo:
            k += 1
        if k == len(spans):
            break
        if spans[k][0] <= lo:
            labels[i] = ids[i]
    return labels


def sample(input_ids: list[int], labels: list[int]) -> dict[str, Any]:
    """A tokenized sample in the layout every backend reads (mini-trainer's and instructlab-training's fields)."""
    return {
        "input_ids": input_ids,
        "labels": labels,
        "len": len(input_ids),
        "num_loss_counted_tokens": len(labels) - 1 - labels[1:].count(IGNORE_INDEX) if labels else 0,
    }


def read_jsonl(path: str | Path) -> Iterator[dict]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def tokenize_samples(tokenizer, records: Iterable[dict], max_seq_len: int | None = None) -> tuple[list[dict], int]:
    """Tokenized samples, dropping those longer than ``max_seq_len``; returns (samples, dropped count).

    Records that are already tokenized (they have ``input_ids``) pass through unchanged; others are
    normalized first (chat or Alpaca), raising ``BadRecord`` for one that is not usable.
    """
    records = list(records)
    raw = [normalize(r) for r in records if "input_ids" not in r]
    encoded = iter(ChatEncoder.from_tokenizer(tokenizer).encode(raw)) if raw else iter(())
    out, dropped = [], 0
    for record in records:
        tokens = record if "input_ids" in record else next(encoded)
        if isinstance(tokens, BadRecord):
            raise tokens
        if max_seq_len is not None and len(tokens["input_ids"]) > max_seq_len:
            dropped += 1
            continue
        out.append(tokens)
    return out, dropped
