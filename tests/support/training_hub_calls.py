"""Collect every ``sft()``, ``osft()`` and ``lora_sft()`` call of Training Hub's README, docs and examples as JSON.

    python tests/support/training_hub_calls.py training_hub-X.Y.Z/ > tests/support/training_hub_calls.json

(the unpacked sdist: ``pip download --no-deps --no-binary :all: training-hub==X.Y.Z``). Each keyword's value is
what the example passes when run as written: literals, names assigned earlier in the file or notebook, argparse
defaults, ``os.path.join``/f-strings, ``os.environ.get`` defaults; on a GPU node (``torch.cuda.device_count()`` is 8).
A path or name that only exists at run time (a timestamped folder, a CLI argument without default) becomes
``"<expression>"``: any non-empty string means the same to validation. ``BY_HAND`` lists the few values an example
computes otherwise. ``EXPECT`` says which calls are refused here and why; every other complete call must validate.
"""

from __future__ import annotations

import ast
import contextlib
import json
import operator
import os
import re
import sys
import textwrap
from pathlib import Path
from typing import Any

FUNCTIONS = ("sft", "osft", "lora_sft")
SNAPSHOT = json.loads((Path(__file__).parents[2] / "kubetune/contract/snapshots/training-hub.json").read_text())
SIGNATURES = SNAPSHOT["functions"]
# parameters typed str: a run-time path or name stands in as "<expression>"
STRINGS = {
    f: {n for n, p in ps.items() if "str" in (p["annotation"] or "") and "int" not in p["annotation"]}
    for f, ps in SIGNATURES.items()
}

BY_HAND: dict[str, dict[str, Any]] = {
    # a memory estimate picks max_tokens_per_gpu from [16384, 8192, ...] at run time: its first choice
    "examples/notebooks/templated_sft.ipynb": {"max_tokens_per_gpu": 16384, "max_seq_len": 4096},
    "examples/notebooks/templated_osft.ipynb": {"max_tokens_per_gpu": 16384, "max_seq_len": 4096},
    # the script parses its --lr-scheduler-kwargs default "{}" with json.loads, then passes None for an empty one
    "examples/scripts/osft_multiphase_training.py": {"lr_scheduler_kwargs": None},
}
SILENTLY_DROPPED = "Training Hub drops it without a word ({}); kubetune refuses a key no backend field takes"
EXPECT: dict[str, dict[str, Any]] = {
    "docs/api/backends/README.md:222": {
        "refused": ["custom_optimization_flag"],
        "why": SILENTLY_DROPPED.format("an illustration: instructlab-training's TrainingArgs ignores unknown fields"),
    },
    "examples/scripts/osft_gpt_oss_example.py:142": {
        "refused": ["osft_memory_efficient_init"],
        "why": SILENTLY_DROPPED.format("not a field of mini-trainer 0.9's TrainingArgs, which Training Hub filters by"),
    },
}
ABRIDGED = "abridged in the docs (no max_seq_len, effective_batch_size, learning_rate): instructlab-training refuses it there too"
for _source in ("docs/algorithms/sft.md:61", "docs/algorithms/sft.md:187", "docs/api/backends/instructlab-training.md:156",
                "docs/guides/logging.md:24"):  # fmt: skip
    EXPECT[_source] = {"refused": ["max_seq_len", "effective_batch_size", "learning_rate"], "why": ABRIDGED}


OPERATORS = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt,
    ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
}  # fmt: skip
CALLBACKS = {"refused": ["callbacks"], "why": "Python callbacks cannot travel in a JSON artifact"}


class Unresolved(Exception):
    pass


def blocks(path: Path):
    """(where, code) of every Python piece of a file: the file, each ```python block, each notebook code cell."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".py":
        yield 1, text
    elif path.suffix == ".md":
        lines = text.splitlines()
        i = 0
        while i < len(lines):
            if re.match(r"\s*```(python|py)\s*$", lines[i]):
                j = i + 1
                while j < len(lines) and not lines[j].strip().startswith("```"):
                    j += 1
                yield i + 2, textwrap.dedent("\n".join(lines[i + 1 : j]))
                i = j
            i += 1
    elif path.suffix == ".ipynb":
        for n, cell in enumerate(json.loads(text)["cells"]):
            if cell["cell_type"] == "code":
                source = "".join(cell["source"]).splitlines()
                yield f"cell{n}", "\n".join(line for line in source if not line.lstrip().startswith(("!", "%")))


class Values:
    """What the names of one file (or notebook) hold, as far as plain evaluation goes."""

    def __init__(self) -> None:
        self.names: dict[str, Any] = {}
        self.nodes: dict[str, ast.expr] = {}
        self.args: dict[str, dict[str, ast.expr]] = {}  # argparse dest -> add_argument keywords

    def learn(self, tree: ast.AST) -> None:
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add_argument":
                flags = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
                keywords = {k.arg: k.value for k in node.keywords if k.arg}
                flag = next((f for f in flags if f.startswith("--")), None)
                if flag:
                    dest = keywords["dest"].value if "dest" in keywords else flag.lstrip("-").replace("-", "_")
                    self.args[dest] = {**keywords, "flag": ast.Constant(flag)}
        for node in [n for _ in range(2) for n in ast.walk(tree)]:  # twice: a name may be used before its line
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                self.nodes[node.targets[0].id] = node.value
                with contextlib.suppress(Exception):  # not plainly evaluable: the name stays unknown
                    self.names[node.targets[0].id] = self.value(node.value)

    def argument(self, dest: str) -> Any:
        keywords = self.args[dest]
        if "default" in keywords:
            value = self.value(keywords["default"])
            kind = keywords.get("type")
            if isinstance(kind, ast.Name) and kind.id in ("int", "float") and isinstance(value, str):
                value = {"int": int, "float": float}[kind.id](value)
            return value
        action = self.value(keywords["action"]) if "action" in keywords else None
        if action in ("store_true", "store_false"):
            return action == "store_false"
        return f"<{keywords['flag'].value}>"

    def value(self, node: ast.expr) -> Any:  # noqa: C901 - one case per expression form
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            return [self.value(e) for e in node.elts]
        if isinstance(node, ast.Dict):
            out: dict = {}
            for k, v in zip(node.keys, node.values, strict=True):
                out.update(self.value(v) if k is None else {self.value(k): self.value(v)})
            return out
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.Not)):
            operand = self.value(node.operand)
            return -operand if isinstance(node.op, ast.USub) else not operand
        if isinstance(node, ast.BinOp):
            a, b = self.value(node.left), self.value(node.right)
            if isinstance(node.op, ast.Div) and not isinstance(a, (int, float)):
                return os.path.join(str(a), str(b))  # Path / "name"
            return OPERATORS[type(node.op)](a, b)
        if isinstance(node, ast.Compare) and len(node.ops) == 1:
            a, b = self.value(node.left), self.value(node.comparators[0])
            return OPERATORS[type(node.ops[0])](a, b)
        if isinstance(node, ast.IfExp):
            return self.value(node.body) if self.value(node.test) else self.value(node.orelse)
        if isinstance(node, ast.Name) and node.id in self.names:
            return self.names[node.id]
        if isinstance(node, ast.Subscript):
            return self.value(node.value)[self.value(node.slice)]
        if isinstance(node, ast.JoinedStr):
            return "".join(str(self.value(v.value)) if isinstance(v, ast.FormattedValue) else v.value for v in node.values)
        if isinstance(node, ast.Attribute):
            if isinstance(node.value, ast.Name) and node.value.id == "args" and node.attr in self.args:
                return self.argument(node.attr)
            if ast.unparse(node.value) == "ShardingStrategies":
                return node.attr  # instructlab-training's enum: its values are its names
        if isinstance(node, ast.Call):
            return self.call(node)
        raise Unresolved(ast.unparse(node))

    def call(self, node: ast.Call) -> Any:
        f = ast.unparse(node.func)
        args = [self.value(a) for a in node.args]
        if f in ("str", "Path", "int", "float") and len(args) == 1:
            return {"str": str, "Path": str, "int": int, "float": float}[f](args[0])
        if f in ("max", "min") and args:
            return {"max": max, "min": min}[f](*args)
        if f == "os.path.join":
            return os.path.join(*map(str, args))
        if f in ("os.environ.get", "os.getenv"):
            return args[1] if len(args) > 1 else None
        if f == "torch.cuda.is_available":
            return True
        if f == "torch.cuda.device_count":
            return 8
        if f in ("dict", "FSDPOptions") and not args:  # FSDPOptions: instructlab-training's model, as its JSON fields
            return {k.arg: self.value(k.value) for k in node.keywords}
        if isinstance(node.func, ast.Attribute) and node.func.attr in ("get", "isdigit", "lower", "strip"):
            return getattr(self.value(node.func.value), node.func.attr)(*args)
        raise Unresolved(f)


def calls(root: Path):
    files = [root / "README.md", *root.glob("docs/**/*.md"), *root.glob("examples/**/*.py"), *root.glob("examples/**/*.ipynb")]
    for path in sorted(files):
        values = Values()
        for start, code in blocks(path):
            try:
                tree = ast.parse(code)
            except SyntaxError:  # a signature or a shell snippet, not a call
                continue
            values.learn(tree)
            for node in ast.walk(tree):
                function = getattr(node, "func", None)
                name = getattr(function, "id", None) or getattr(function, "attr", None)
                if not isinstance(node, ast.Call) or name not in FUNCTIONS:
                    continue
                if node.args:  # sft(..., x=1): an excerpt, not a call
                    continue
                file = str(path.relative_to(root))
                source = f"{file}:{start + node.lineno - 1 if isinstance(start, int) else start}"
                call = keywords(node, name, values, file)
                missing = [n for n, p in SIGNATURES[name].items() if p["required"] and n not in call]
                if missing:  # "osft(# ... other parameters ...)": not a call Training Hub would run
                    print(f"{source}: skipped, misses {', '.join(missing)}", file=sys.stderr)
                    continue
                if "callbacks" in call:
                    EXPECT.setdefault(source, CALLBACKS)
                yield {"source": source, "function": name, "call": call, **EXPECT.get(source, {})}


def keywords(node: ast.Call, function: str, values: Values, file: str) -> dict[str, Any]:
    pairs: list[tuple[str | None, ast.expr]] = []
    for kw in node.keywords:
        spread = values.nodes.get(kw.value.id) if kw.arg is None and isinstance(kw.value, ast.Name) else None
        if isinstance(spread, ast.Dict):  # **params of a dict literal: key by key
            pairs += [(values.value(k), v) for k, v in zip(spread.keys, spread.values, strict=True)]
        else:
            pairs.append((kw.arg, kw.value))
    call: dict[str, Any] = {}
    for name, expr in pairs:
        try:
            found = values.value(expr)
        except Exception:  # noqa: BLE001 - known only when the example runs
            if name == "callbacks" or name in STRINGS[function]:
                found = f"<{ast.unparse(expr)}>"  # callbacks: Python objects (refused whatever they are); a path or a name
            elif name in BY_HAND.get(file, {}):
                continue
            else:
                raise SystemExit(f"{file}: cannot evaluate {name}={ast.unparse(expr)}: add it to BY_HAND") from None
        call.update(found if name is None else {name: found})
    return {**call, **BY_HAND.get(file, {})}


if __name__ == "__main__":
    print(json.dumps({"training_hub": SNAPSHOT["version"], "calls": list(calls(Path(sys.argv[1])))}, indent=1))
