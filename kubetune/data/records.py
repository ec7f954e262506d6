"""What a training record may look like, and its normal form.

Three input formats are accepted:

- chat: ``{"messages": [{"role", "content", "reasoning_content"?}, ...], "unmask"?: bool, "tools"?: [...]}``;
  an assistant turn may call tools in the OpenAI format (``"tool_calls": [{"type": "function", "id"?,
  "function": {"name", "arguments"}}]``, its ``content`` then null or empty) and ``tool`` turns answer them
  (``content``, ``tool_call_id``?, ``name``?)
- Alpaca: ``{"instruction", "input"?, "output", "system"?}``, converted to chat
- documents: ``{"document": "..."}`` (the column name is configurable) for pretraining

``normalize`` returns the record's normal form or raises ``BadRecord`` with a short reason code (used
for counting) and a message that says what is wrong, in the user's terms.
"""

from __future__ import annotations

import json
from typing import Any, Literal

ROLES = ("system", "user", "assistant", "tool")
DataFormat = Literal["chat", "document"]

# reason codes, in the order the summary lists them
REASONS = {
    "invalid_json": "invalid JSON or not UTF-8",
    "too_large": "larger than the size limit of one record",
    "not_an_object": "not a JSON object",
    "missing_messages": "missing or empty messages",
    "unknown_role": "unknown role",
    "bad_content": "non-string or empty content",
    "bad_field": "a field has the wrong type",
    "no_assistant": "no assistant turn",
    "wrong_format": "record of another format",
    "template_error": "the chat template failed",
    "tools_unsupported": "tool calls the chat template cannot render",
    "too_long": "longer than max_seq_len",
    "no_label_tokens": "nothing left to learn after truncation",
    "duplicate": "exact duplicate",
}


class BadRecord(ValueError):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    def __reduce__(self):  # crosses process boundaries with both fields
        return (BadRecord, (self.code, self.message))


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _chat(messages: Any, unmask: Any, tools: Any = None) -> dict[str, Any]:
    if not isinstance(messages, list) or not messages:
        raise BadRecord("missing_messages", "`messages` must be a non-empty list")
    clean: list[dict[str, Any]] = []
    call_ids: set[str] = set()
    for i, message in enumerate(messages):
        clean.append(_message(i, message, call_ids))
    if not any(m["role"] == "assistant" for m in clean):
        raise BadRecord("no_assistant", "no assistant turn to learn from")
    if unmask is not None and not isinstance(unmask, bool):
        raise BadRecord("bad_field", f"`unmask` must be true or false, got {_show(unmask)}")
    if tools is not None and (not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools)):
        raise BadRecord("bad_field", f"`tools` must be a list of objects (function definitions), got {_show(tools)}")
    record: dict[str, Any] = {"messages": clean}
    if unmask:
        record["unmask"] = True
    if tools:
        record["tools"] = tools
    return record


def _message(i: int, message: Any, call_ids: set[str]) -> dict[str, Any]:
    if not isinstance(message, dict):
        raise BadRecord("bad_field", f"messages[{i}] must be an object")
    role = message.get("role")
    if role not in ROLES:
        raise BadRecord("unknown_role", f"messages[{i}].role must be one of {', '.join(ROLES)}, got {_show_role(role)}")
    # Parquet and Arrow give every struct field; a null field is an absent one.
    out = {k: v for k, v in message.items() if v is not None}
    if "tool_calls" in out:
        if role != "assistant":
            raise BadRecord("bad_field", f"messages[{i}].tool_calls is only allowed in assistant turns, not {role}")
        call_ids.update(_tool_calls(i, out["tool_calls"]))
    content = out.get("content")
    if "tool_calls" in out and content in (None, ""):
        out["content"] = ""  # the calls are the turn's content; "" renders in templates where null would not
    elif not _is_text(content):
        raise BadRecord("bad_content", f"messages[{i}].content must be a non-empty string, got {_show(content)}")
    if "reasoning_content" in out and not isinstance(out["reasoning_content"], str):
        raise BadRecord("bad_field", f"messages[{i}].reasoning_content must be a string")
    for field in ("tool_call_id", "name"):
        if field in out and not _is_text(out[field]):
            raise BadRecord("bad_field", f"messages[{i}].{field} must be a non-empty string, got {_show(out[field])}")
    if role == "tool" and "tool_call_id" in out and call_ids and out["tool_call_id"] not in call_ids:
        raise BadRecord("bad_field", f"messages[{i}].tool_call_id {out['tool_call_id']!r} answers no earlier tool call")
    return out


def _tool_calls(i: int, calls: Any) -> list[str]:
    """Check an assistant turn's ``tool_calls`` (OpenAI format); returns the calls' ids."""
    if not isinstance(calls, list) or not calls:
        raise BadRecord("bad_field", f"messages[{i}].tool_calls must be a non-empty list, got {_show(calls)}")
    ids = []
    for j, call in enumerate(calls):
        at = f"messages[{i}].tool_calls[{j}]"
        if not isinstance(call, dict):
            raise BadRecord("bad_field", f"{at} must be an object, got {_show(call)}")
        if call.get("type") not in (None, "function"):
            raise BadRecord("bad_field", f"{at}.type must be 'function', got {_show_role(call.get('type'))}")
        if call.get("id") is not None:
            if not _is_text(call["id"]):
                raise BadRecord("bad_field", f"{at}.id must be a non-empty string, got {_show(call['id'])}")
            ids.append(call["id"])
        function = call.get("function")
        if not isinstance(function, dict):
            raise BadRecord("bad_field", f"{at}.function must be an object with `name` and `arguments`, got {_show(function)}")
        if not _is_text(function.get("name")):
            raise BadRecord("bad_field", f"{at}.function.name must be a non-empty string, got {_show(function.get('name'))}")
        _arguments(f"{at}.function.arguments", function.get("arguments"))
    return ids


def _arguments(at: str, arguments: Any) -> None:
    """A call's arguments: an object, or a string holding a JSON object (what the OpenAI API returns)."""
    if isinstance(arguments, dict):
        return
    if not isinstance(arguments, str):
        raise BadRecord("bad_field", f"{at} must be a JSON object or a string holding one, got {_show(arguments)}")
    try:
        parsed = json.loads(arguments)
    except (ValueError, RecursionError):
        raise BadRecord("bad_field", f"{at} must be a string holding a JSON object, got a string that is not JSON") from None
    if not isinstance(parsed, dict):
        raise BadRecord("bad_field", f"{at} must be a string holding a JSON object, got JSON {type(parsed).__name__}")


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
        return _chat(record["messages"], record.get("unmask"), record.get("tools"))
    if "instruction" in record or "output" in record:
        return _alpaca(record)
    if document_column in record:
        raise BadRecord("wrong_format", f"a `{document_column}` record is pretraining data; set is_pretraining to use it")
    raise BadRecord("missing_messages", "`messages` must be a non-empty list (or give Alpaca `instruction`/`output`)")


def _show_role(value: Any) -> str:
    """A role or type as given, short (it may be anything, even a whole document)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _show(value: Any) -> str:
    if isinstance(value, str):
        return "an empty string" if not value.strip() else "a string"
    return "null" if value is None else type(value).__name__
