"""kubetune's CPU mode, loaded by every Python process started with this folder on PYTHONPATH (the training
step puts it there for a torchrun backend only where CUDA is absent); see kubetune/backends/cpu_mode.py.

It redirects device calls only in the backend's own training script (``sys.argv[0]`` is exactly the path in
``KUBETUNE_CPU_MODE``), and then runs the ``sitecustomize`` it shadows, if any, in every process."""

import os
import sys


def _is_backend_script() -> bool:
    target = os.environ.get("KUBETUNE_CPU_MODE", "")
    return bool(target and sys.argv and sys.argv[0]) and os.path.realpath(sys.argv[0]) == os.path.realpath(target)


def _run_shadowed() -> None:
    """The next ``sitecustomize`` on ``sys.path``, which this one hides by coming first."""
    import importlib.machinery
    import importlib.util

    here = os.path.dirname(os.path.realpath(__file__))
    path = [entry for entry in sys.path if os.path.realpath(entry or os.curdir) != here]
    found = importlib.machinery.PathFinder.find_spec("sitecustomize", path)
    if found is not None and found.loader is not None:
        # ``import sitecustomize`` then gives that module, as without ours (ours stays under its own name)
        sys.modules[__name__ + "_kubetune"] = sys.modules.get(__name__)
        shadowed = importlib.util.module_from_spec(found)
        sys.modules["sitecustomize"] = shadowed
        found.loader.exec_module(shadowed)


if _is_backend_script():
    from kubetune.backends.cpu_mode import install, wanted

    if wanted():
        calls = install()
        if os.environ.get("LOCAL_RANK", "0") == "0":
            print(f"[kubetune] CPU mode: redirected {', '.join(calls)}", flush=True)
_run_shadowed()
