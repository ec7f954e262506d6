"""kubetune's CPU mode, loaded by every Python process started with this folder on PYTHONPATH (the training
step puts it there for a torchrun backend only where CUDA is absent); see kubetune/backends/cpu_mode.py."""

import os
import sys

if os.environ.get("KUBETUNE_CPU_MODE") == "1" and sys.argv and sys.argv[0].endswith(("train.py", "main_ds.py")):
    from kubetune.backends.cpu_mode import install, wanted

    if wanted():
        calls = install()
        if os.environ.get("LOCAL_RANK", "0") == "0":
            print(f"[kubetune] CPU mode: redirected {', '.join(calls)}", flush=True)
