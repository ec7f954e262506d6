"""Write an image's constraints file: every package that ``kubetune[EXTRAS]`` needs, pinned to the version
installed in the current environment (so pin from an environment that resolved and passed the tests).

    python images/pin.py lora,s3,registry > images/runtime-constraints.txt
"""

from __future__ import annotations

import re
import sys
from importlib import metadata

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def closure(root: str, extras: set[str]) -> dict[str, str]:
    """Installed name -> version for ``root[extras]`` and everything it needs, markers evaluated here."""
    pinned: dict[str, str] = {}
    todo = [(root, frozenset(extras))]
    seen = set()
    while todo:
        name, wanted = todo.pop()
        if (name, wanted) in seen:
            continue
        seen.add((name, wanted))
        dist = metadata.distribution(name)
        pinned[canonicalize_name(dist.metadata["Name"])] = dist.version
        for line in dist.requires or []:
            req = Requirement(line)
            environment = default_environment()
            active = [e for e in wanted or {""} if req.marker is None or req.marker.evaluate({**environment, "extra": e})]
            if not active:
                continue
            try:
                metadata.distribution(req.name)
            except metadata.PackageNotFoundError:
                continue  # an optional dependency this environment does not have
            todo.append((req.name, frozenset(req.extras)))
    pinned.pop(canonicalize_name(root), None)
    return pinned


def main() -> None:
    extras = set(re.split(r"[,\s]+", sys.argv[1])) if len(sys.argv) > 1 else set()
    print(f"# kubetune[{','.join(sorted(extras))}]: written by images/pin.py from a tested environment; do not edit by hand")
    for name, version in sorted(closure("kubetune", extras).items()):
        print(f"{name}=={version}")


if __name__ == "__main__":
    main()
