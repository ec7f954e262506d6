"""What a training record may look like, and its normal form.

Three input formats are accepted:

- chat: ``{"messages": [{"role", "content", "reasoning_content"?}, ...], "unmask"?: bool}``
- Alpaca: ``{"instruction", "input"?, "output", "system"?}``, converted to chat
- documents: ``{"document": "..."}`` (the column name is configurable) for pretraining

``normalize`` returns the record's normal form or raises ``BadRecord`` with a short reason code (used
for counting) and a message that says what is wrong, in the user's terms.
"""

from __future__ import annotations

from typing import Any, Literal

ROLES = ("system", "user", "assistant", "tool")
DataFormat = Literal["chat", "document"]

# reason codes, in the order the summary lists them
REASONS = {
    "invalid_json": "invalid JSON",
    "not_an_object": "not a JSON object",
    "missing_messages": "missing or empty messages",
    "unknown_role": "unknown role",
    "bad_content": "non-string or empty content",
    "bad_field": "a field has the wrong type",
    "no_assistant": "no assistant turn",
    "wrong_format": "record of another format",
    "template_error": "the chat template failed",
    "too_long": "longer than max_seq_len",
    "no_label_tokens": "nothing left to learn after truncation",
    "duplicate": "exact duplicate",
}


class BadRecord(ValueError):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _chat(messages: Any, unmask: Any) -> dict[str, Any]:
    if not isinstance(messages, list) or not messages:
        raise BadRecord("missing_messages", "`messages` must be a non-empty list")
    clean = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise BadRecord("bad_field", f"messages[{i}] must be an object")
        role = message.get("role")
        if role not in ROLES:
            raise BadRecord("unknown_role", f"messages[{i}].role must be one of {', '.join(ROLES)}, got {role!r}")
        content = message.get("content")
        tool_call = role == "assistant" and message.get("tool_calls") and content in (None, "")
        if not tool_call and not _is_text(content):
            raise BadRecord("bad_content", f"messages[{i}].content must be a non-empty string, got {_show(content)}")
        # Parquet and Arrow give every struct field; a null field is an absent one.
        out = {k: v for k, v in message.items() if v is not None}
        if "reasoning_content" in out and not isinstance(out["reasoning_content"], str):
            raise BadRecord("bad_field", f"messages[{i}].reasoning_content must be a string")
        clean.append(out)
    if not any(m["role"] == "assistant" for m in clean):
        raise BadRecord("no_assistant", "no assistant turn to learn from")
    if unmask is not None and not isinstance(unmask, bool):
        raise BadRecord("bad_field", f"`unmask` must be true or false, got {_show(unmask)}")
    return {"messages": clean, "unmask": True} if unmask else {"messages": clean}


def _alpaca(record: dict[str, Any]) -> dict[str, Any]:
    for name in ("instruction", "output"):
        if not _is_text(record.get(name)):
            raise BadRecord("bad_content", f"`{name}` must be a non-empty string, got {_show(record.get(name))}")
    extra = record.get("input")
    if extra is not None and not isinstance(extra, str):
        raise BadRecord("bad_field", "`input` must be a string")
    prompt = record["instruction"] + (f"\n\n{extra}" if extra and extra.strip() else "")
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": record["output"]}]
    if _is_text(record.get("system")):
        messages.insert(0, {"role": "system", "content": record["system"]})
    return {"messages": messages}


def normalize(record: Any, data_format: DataFormat = "chat", document_column: str = "document") -> dict[str, Any]:
    """The record's normal form: ``{"messages", "unmask"?}`` for chat, ``{"document"}`` for documents."""
    if not isinstance(record, dict):
        raise BadRecord("not_an_object", f"a record must be a JSON object, got {type(record).__name__}")
    if data_format == "document":
        if document_column not in record:
            raise BadRecord("wrong_format", f"pretraining data needs a `{document_column}` field")
        if not _is_text(record[document_column]):
            raise BadRecord("bad_content", f"`{document_column}` must be a non-empty string")
        return {"document": record[document_column]}
    if "messages" in record:
        return _chat(record["messages"], record.get("unmask"))
    if "instruction" in record or "output" in record:
        return _alpaca(record)
    if document_column in record:
        raise BadRecord("wrong_format", f"a `{document_column}` record is pretraining data; set is_pretraining to use it")
    raise BadRecord("missing_messages", "`messages` must be a non-empty list (or give Alpaca `instruction`/`output`)")


def _show(value: Any) -> str:
    if isinstance(value, str):
        return "an empty string" if not value.strip() else "a string"
    return "null" if value is None else type(value).__name__
