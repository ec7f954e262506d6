"""Training Hub's named parameters of ``sft()``, ``osft()`` and ``lora_sft()``, read from its source with ``ast``
(importing training-hub would load torch and every backend).

``snapshots/training-hub.json`` holds them for the release ``params`` curates (its version is in the snapshot);
``tests/contract/test_hub.py`` reads the installed training-hub instead when there is one. Regenerate the
snapshot from a wheel or an installed training-hub with ``python -m kubetune.contract.hub [WHEEL]``.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import sys
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Any

from kubetune.contract.catalog import SNAPSHOT_DIR

SNAPSHOT = SNAPSHOT_DIR / "training-hub.json"
SOURCES = {"sft": "algorithms/sft.py", "osft": "algorithms/osft.py", "lora_sft": "algorithms/lora.py"}


def signature(source: str, function: str) -> dict[str, dict[str, Any]]:
    """Each named parameter of module-level ``function`` in ``source``: annotation, default, required, keyword-only."""
    node = next(n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef) and n.name == function)
    args = node.args
    positional = [*args.posonlyargs, *args.args]
    defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    named = [(a, d, False) for a, d in zip(positional, defaults, strict=True)]
    named += [(a, d, True) for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True)]
    return {
        arg.arg: {
            "annotation": ast.unparse(arg.annotation) if arg.annotation else None,
            "default": ast.literal_eval(default) if default is not None else None,
            "required": default is None,
            "keyword_only": keyword_only,
        }
        for arg, default, keyword_only in named
    }


def read(files: dict[str, str], version: str) -> dict[str, Any]:
    """The snapshot document from the package's sources (path inside ``training_hub/`` -> text)."""
    return {
        "distribution": "training-hub",
        "version": version,
        "functions": {name: signature(files[path], name) for name, path in SOURCES.items()},
    }


def read_wheel(wheel: str | Path) -> dict[str, Any]:
    with zipfile.ZipFile(wheel) as z:
        files = {path: z.read(f"training_hub/{path}").decode() for path in SOURCES.values()}
        meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    return read(files, next(line.split(":", 1)[1].strip() for line in meta.splitlines() if line.startswith("Version:")))


def read_installed() -> dict[str, Any] | None:
    """The installed training-hub's named parameters, or None when it is not installed."""
    try:
        found = importlib.util.find_spec("training_hub")
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    root = Path(next(iter(found.submodule_search_locations)))
    return read({path: (root / path).read_text(encoding="utf-8") for path in SOURCES.values()}, metadata.version("training-hub"))


def load_snapshot() -> dict[str, Any]:
    return json.loads(SNAPSHOT.read_text(encoding="utf-8"))


def write_snapshot(document: dict[str, Any]) -> Path:
    SNAPSHOT.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return SNAPSHOT


if __name__ == "__main__":
    found = read_wheel(sys.argv[1]) if len(sys.argv) > 1 else read_installed()
    if found is None:
        sys.exit("training-hub is not installed: give its wheel: python -m kubetune.contract.hub WHEEL")
    print(write_snapshot(found))
