"""Constraints that keep a base image's Python packages as they are: one ``name==version`` line for every distribution
installed in this interpreter's environment, except those that the given constraints files pin (ours to set).

    python3 images/base_constraints.py images/cuda-constraints.txt > images/base-constraints.txt
    pip install -c images/base-constraints.txt -c images/cuda-constraints.txt ".[...]"

With both files, pip keeps the base's torch, triton and CUDA libraries (and everything else the base holds and we do
not pin): it installs around them or fails, never replaces them. A constraints file that pins one of those is refused
(exit 2). Standard library only: it runs on the base image's own Python before anything is installed.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

FROM_THE_BASE = re.compile(r"^(torch|torchvision|torchaudio|triton|nvidia-.*)$")  # built together: never ours to pin


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned(path: Path) -> set[str]:
    """The names a constraints file pins (``name==version`` lines; comments and blank lines skipped)."""
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return {canonical(re.split(r"[=<>!~;\[ ]", line)[0]) for line in lines if line}


def installed() -> dict[str, str]:
    """Name -> version of every distribution this interpreter imports (the first on sys.path, as import does)."""
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(canonical(name), dist.version)
    return found


def main(paths: list[str]) -> None:
    ours = set().union(*(pinned(Path(p)) for p in paths))
    refused = sorted(name for name in ours if FROM_THE_BASE.match(name))
    if refused:
        print(f"base_constraints: {', '.join(paths)} pins {', '.join(refused)}: these come from the base image", file=sys.stderr)
        sys.exit(2)
    for name, version in sorted(installed().items()):
        if name not in ours:
            print(f"{name}=={version}")


if __name__ == "__main__":
    main(sys.argv[1:])
