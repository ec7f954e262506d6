"""Each component folder's README.md, generated from its ``component.py`` and ``metadata.yaml`` (the
kubeflow/pipelines-components convention): the components' docstrings, their inputs and outputs as the KFP
component spec declares them, and the metadata; the hand-written text below ``MARKER`` is kept as it is.

Regenerate every README, from the repository's root: ``python -m tests.support.component_readmes``
(components/tests checks they are current). A development tool: not in the wheel.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path
from typing import Any

import docstring_parser
import yaml

MARKER = "<!-- custom-content -->"
HEAD = (
    "<!-- generated from component.py and metadata.yaml by `python -m tests.support.component_readmes`: "
    "edit those, or the hand-written text below the custom-content marker -->"
)
COMPONENTS = Path(__file__).resolve().parents[2] / "components"  # the repository's component folders
TYPES = {"String": "str", "Integer": "int", "Float": "float", "Boolean": "bool", "Struct": "dict", "List": "list"}


def folders(root: Path | None = None) -> list[Path]:
    """The component folders (those with a ``component.py``) of ``root``, the repository's by default."""
    return sorted(p.parent for p in (root or COMPONENTS).glob("*/component.py"))


def components_of(folder: Path) -> list[Any]:
    """The KFP components that ``folder/component.py`` defines, in source order."""
    module = importlib.import_module(f"kubetune.components.{folder.name}.component")
    found = [v for v in vars(module).values() if hasattr(v, "component_spec") and hasattr(v, "python_func")]
    return sorted(found, key=lambda c: inspect.getsourcelines(c.python_func)[1])


def _type(kfp_type: str) -> str:
    return TYPES.get(kfp_type, kfp_type.removeprefix("system.").split("@")[0])


def _cell(text: str | None) -> str:
    return " ".join((text or "").split()).replace("|", "\\|")


def _docstring(func: Any) -> tuple[str, dict[str, str]]:
    """The description and the documented names: the ``Args:`` and the ``Returns:`` sections (as KFP reads them)."""
    doc, _, returns = (inspect.getdoc(func) or "").partition("Returns:")
    parsed = docstring_parser.parse(doc)
    params = parsed.params + (docstring_parser.parse(f"Returns.\n\nArgs:{returns}").params if returns else [])
    description = "\n\n".join(d for d in (parsed.short_description, parsed.long_description) if d)
    return description, {p.arg_name: _cell(p.description) for p in params}


def component_section(component: Any) -> str:
    """One component: its description, inputs (type, default) and outputs."""
    spec = component.component_spec
    description, docs = _docstring(component.python_func)
    lines = [f"## `{component.python_func.__name__}`", "", description, "", "### Inputs", ""]
    lines += ["| Parameter | Type | Default | Description |", "|---|---|---|---|"]
    for name, given in (spec.inputs or {}).items():
        default = "" if given.default is None and not given.optional else f"`{given.default!r}`"
        lines.append(f"| `{name}` | {_type(given.type)} | {default} | {docs.get(name, '')} |")
    lines += ["", "### Outputs", "", "| Name | Type | Description |", "|---|---|---|"]
    for name, given in (spec.outputs or {}).items():
        lines.append(f"| `{name}` | {_type(given.type)} | {docs.get(name, '')} |")
    return "\n".join(lines)


def metadata_section(metadata: dict[str, Any]) -> str:
    kubeflow = ", ".join(f"{d['name']} {d['version']}" for d in metadata["dependencies"]["kubeflow"])
    services = ", ".join(f"{d['name']} {d['version']}" for d in metadata["dependencies"].get("external_services") or [])
    verified = metadata["lastVerified"]
    lines = [
        "## Metadata",
        "",
        f"- **Name**: {metadata['name']}",
        f"- **Stability**: {metadata['stability']}",
        f"- **Dependencies**: Kubeflow {kubeflow}" + (f"; external services: {services}" if services else ""),
        f"- **Tags**: {', '.join(metadata.get('tags', []))}",
        f"- **Last verified**: {verified.date() if hasattr(verified, 'date') else verified} "
        "(its tests, against the KFP SDK pyproject requires; not on a cluster)",
    ]
    return "\n".join(lines)


def custom_text(readme: Path) -> str:
    """The hand-written text below the marker (empty when the README has none yet)."""
    text = readme.read_text(encoding="utf-8") if readme.is_file() else ""
    return text.partition(MARKER)[2].strip("\n")


def render(folder: Path) -> str:
    """The README of ``folder``, as it should be committed."""
    metadata = yaml.safe_load((folder / "metadata.yaml").read_text(encoding="utf-8"))
    parts = [HEAD, f"# {metadata['name']}", *map(component_section, components_of(folder)), metadata_section(metadata)]
    return "\n\n".join(parts) + f"\n\n{MARKER}\n\n{custom_text(folder / 'README.md')}\n"


def main() -> int:
    for folder in folders():
        readme = folder / "README.md"
        text = render(folder)
        if not readme.is_file() or readme.read_text(encoding="utf-8") != text:
            readme.write_text(text, encoding="utf-8")
            print(f"wrote {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
