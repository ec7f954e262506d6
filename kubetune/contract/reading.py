"""Reading a spec safely: bounded size and depth, strict UTF-8 and JSON, and the line of every key.

Python's ``json`` accepts ``NaN``/``Infinity``, keeps the last of duplicate keys without a word and recurses
(a deeply nested document raises RecursionError). A spec is read in bounded memory instead: at most
``MAX_SPEC_BYTES`` are read, one pass over its tokens (no recursion) finds every key's line, duplicate keys,
non-finite numbers and nesting beyond ``MAX_DEPTH``, and only then does ``json`` parse it.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubetune.errors import Problem
from kubetune.secrets import shown

MAX_SPEC_BYTES = 1024 * 1024  # 1 MiB: a spec is a few KB; anything near this is not a spec
MAX_DEPTH = 32  # nesting levels of objects and lists (specs use 3 or 4)
MAX_ITEMS = 10_000  # keys of one object, items of one list
MAX_NUMBER_CHARS = 40  # a longer number literal cannot be a setting

# a string (possessive: no regex state kept per character), a structural character, a literal, or a lone quote
_TOKEN = re.compile(r'"[^"\\]*+(?:\\.[^"\\]*+)*+"|[{}\[\]:,]|[^\s{}\[\]:,"]++|"')


@dataclass
class Layout:
    """Where things are in a spec file: the first line of each key path, and problems found on the way."""

    lines: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)


@dataclass
class _Frame:
    path: str
    is_object: bool
    keys: dict[str, int] = field(default_factory=dict)
    index: int = 0
    expect_key: bool = True
    key: str | None = None


def _child(frame: _Frame) -> str:
    if frame.is_object:
        name = shown(frame.key)
        return f"{frame.path}.{name}" if frame.path else name
    return f"{frame.path}[{frame.index}]"


def _literal_problem(token: str) -> str | None:
    """Why a bare JSON literal is refused, or None."""
    if token in ("true", "false", "null"):
        return None
    if token.lstrip("-") in ("NaN", "Infinity", "inf", "nan"):
        return f"{token} is not a finite number (JSON has no NaN or Infinity)"
    if len(token) > MAX_NUMBER_CHARS:
        return f"is a number of {len(token)} characters (at most {MAX_NUMBER_CHARS})"
    try:
        if not math.isfinite(float(token)):
            return "is too large to be a finite number"
    except ValueError:
        return None  # json reports it with its line and column
    return None


def layout(text: str, source: str) -> Layout:
    """One pass over the tokens of ``text``: key lines, duplicate keys, bad literals, too deep nesting."""
    out = Layout()
    stack: list[_Frame] = []
    line, last = 1, 0
    for match in _TOKEN.finditer(text):
        line += text.count("\n", last, match.start())
        last = match.start()
        token = match.group()
        if token == '"':  # a string that never ends: json reports it (scanning on would be quadratic)
            break
        top = stack[-1] if stack else None
        if token in "{[" and len(token) == 1:
            path = _child(top) if top else ""
            if len(stack) >= MAX_DEPTH:
                out.problems = [Problem(f"{source}:{line}", f"is nested deeper than {MAX_DEPTH} levels")]
                return out
            stack.append(_Frame(path, token == "{"))
        elif token in "}]" and len(token) == 1:
            if stack:
                stack.pop()
        elif token == ",":
            if top and top.is_object:
                top.expect_key, top.key = True, None
            elif top:
                top.index += 1
            if top and max(top.index, len(top.keys)) >= MAX_ITEMS:
                kind = "keys" if top.is_object else "items"
                where = f"`{top.path}`: " if top.path else ""
                message = f"{where}has more than {MAX_ITEMS} {kind}; a spec's objects and lists hold at most {MAX_ITEMS}"
                out.problems = [Problem(f"{source}:{line}", message)]
                return out
        elif token == ":":
            continue
        elif top and top.is_object and top.expect_key and token.startswith('"'):
            try:
                key = json.loads(token) if "\\" in token else token[1:-1]
            except ValueError:
                key = token[1:-1]
            top.expect_key, top.key = False, key
            path = _child(top)
            if key in top.keys:
                out.problems.append(
                    Problem(f"{source}:{top.keys[key]} and :{line}: `{path}`", "is given twice (JSON keeps only the last)")
                )
            else:
                top.keys[key] = line
                out.lines.setdefault(path, line)
        elif not token.startswith('"'):
            why = _literal_problem(token)
            if why:
                where = _child(top) if top and (top.key is not None or not top.is_object) else "spec"
                out.problems.append(Problem(f"{source}:{line}: `{where}`", why))
    return out


class Refused(Exception):
    """A spec refused while being read, with every problem (file:line each)."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems


def _kind(mode: int) -> str:
    kinds = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))
    kinds += ((stat.S_ISSOCK, "a socket"),)
    return next((name for test, name in kinds if test(mode)), "not a file")


def read_text(path: Path) -> str:
    """The spec file's text: a regular file (never a FIFO or a device, which could block), at most
    ``MAX_SPEC_BYTES`` ever read, and UTF-8."""
    too_big = Problem(str(path), f"is larger than {MAX_SPEC_BYTES} bytes (1 MiB), the size limit of a spec")
    try:
        # non-blocking: opening a FIFO waits for a writer, reading one may wait forever; only a file is read
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        with open(fd, "rb") as f:
            mode = os.fstat(fd).st_mode
            if stat.S_ISDIR(mode):
                raise Refused([Problem(str(path), "cannot be read: Is a directory")])
            if not stat.S_ISREG(mode):
                raise Refused([Problem(str(path), f"is not a regular file but {_kind(mode)}; give a JSON file")])
            if os.fstat(fd).st_size > MAX_SPEC_BYTES:
                raise Refused([too_big])
            data = f.read(MAX_SPEC_BYTES + 1)
    except OSError as e:
        raise Refused([Problem(str(path), f"cannot be read: {e.strerror or type(e).__name__}")]) from None
    if len(data) > MAX_SPEC_BYTES:
        raise Refused([too_big])
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise Refused([Problem(f"{path}:{line}", f"is not UTF-8 text (byte {e.start})")]) from None


def _no_constant(name: str) -> Any:
    raise Refused([Problem("spec", f"{name} is not a finite number")])


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise Refused([Problem("spec", "a number is too large to be finite")])
    return value


def parse(text: str, source: str) -> tuple[Any, Layout]:
    """``text`` parsed as one JSON document; raises ``Refused`` with every problem (file:line each)."""
    found = layout(text, source)
    if found.problems and found.problems[0].message.endswith(("levels", f"at most {MAX_ITEMS}")):
        raise Refused(found.problems)
    try:
        document = json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
    except json.JSONDecodeError as e:
        raise Refused([Problem(f"{source}:{e.lineno}:{e.colno}", f"is not valid JSON: {e.msg}")]) from None
    except Refused as e:
        raise Refused(found.problems or e.problems) from None
    except (ValueError, RecursionError) as e:
        raise Refused(found.problems or [Problem(source, f"is not a valid spec: {type(e).__name__}")]) from None
    if found.problems:
        raise Refused(found.problems)
    return document, found
