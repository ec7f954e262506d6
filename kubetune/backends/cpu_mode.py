"""CPU mode for the two torchrun backends (instructlab-training, mini-trainer): try the pipeline without a GPU.

Both backends hard-wire CUDA devices and NCCL although their training loops are plain PyTorch. Where CUDA is
absent, the training step starts them with this module's ``sitecustomize`` on ``PYTHONPATH``; in their torchrun
children it redirects device and process-group selection only (the list below, each with the backend lines
that need it) and never touches the training math. It is for trying the pipeline on a laptop or in CI, not for
real training: FSDP sharding, flash-attn and the CUDA kernels stay GPU-only, and the step says so loudly.

The ``sitecustomize`` acts only in a process whose ``sys.argv[0]`` is the exact path of the launched backend's
script (``SCRIPTS``, passed in ``KUBETUNE_CPU_MODE``); every other Python process that inherits the
``PYTHONPATH`` (torchrun itself, tools the backend starts) is left as it is. It shadows any other
``sitecustomize`` on the path, so it runs that one itself, as Python would have.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ENV_FLAG = "KUBETUNE_CPU_MODE"  # set to the backend script's path: the only process the sitecustomize changes
SITE_DIR = Path(__file__).parent / "cpu_site"
TRIGGER_DIR = Path("/dev/shm")  # where both backends' on-demand-checkpoint trigger files live
_TRIGGER = re.compile(r"kubetune-(\d+)-[0-9a-f]{32}")  # a launch's own trigger file: its pid, a uuid
# the script each backend's torchrun runs (module, file beside it): CPU mode applies in that process only
SCRIPTS = {"instructlab-training": ("instructlab.training", "main_ds.py"), "mini-trainer": ("mini_trainer", "train.py")}
WARNING = (
    "[kubetune] CPU mode: no CUDA GPU here, so {backend} runs its own training loop on the CPU with device and "
    "process-group calls redirected (gloo, one process, sdpa attention). This is for trying the pipeline, "
    "not for real training."
)


@dataclass(frozen=True)
class Redirection:
    """One device or process-group call redirected in CPU mode, and the backend lines that make it necessary."""

    call: str
    to: str
    sites: tuple[tuple[str, str], ...]  # (file inside site-packages, text of the line) in the pinned versions


REDIRECTIONS = (
    Redirection(
        "torch.distributed.init_process_group",
        'backend "gloo", no device_id',
        (("mini_trainer/utils.py", 'torch.distributed.init_process_group("nccl", timeout=timedelta(minutes=180)'),),
    ),
    Redirection(
        "torch.device",
        '"cuda" / "cuda:N" become "cpu"',
        (
            ("mini_trainer/utils.py", 'device = torch.device("cuda", local_rank)'),
            ("mini_trainer/osft_utils.py", 'local_device = torch.device("cuda", local_rank)'),
            ("instructlab/training/main_ds.py", 'torch_device = torch.device("cuda", local_rank)'),
            ("instructlab/training/batch_loss_manager.py", 'self.torch_device = torch.device("cuda", local_rank)'),
        ),
    ),
    Redirection(
        "torch.distributed.device_mesh.init_device_mesh",
        'device type "cpu"',
        (("mini_trainer/setup_model_for_training.py", 'mesh = init_device_mesh("cuda", [world_size], mesh_dim_names=["fsdp"])'),),
    ),
    Redirection(
        "torch.cuda.set_device",
        "nothing (one CPU)",
        (
            ("mini_trainer/utils.py", "torch.cuda.set_device(local_rank)"),
            ("instructlab/training/main_ds.py", 'torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))'),
        ),
    ),
    Redirection(
        "torch.cuda.current_device",
        'the "cpu" device',
        (("instructlab/training/on_demand_checkpoint.py", "device=torch.cuda.current_device(),"),),
    ),
    Redirection(
        "torch.Tensor.cuda",
        "the tensor itself (already on the CPU)",
        (("instructlab/training/main_ds.py", "tensor = torch.ByteTensor([False]).cuda()"),),
    ),
    Redirection(
        "torch.cuda.memory_stats",
        "zero counters",
        (("instructlab/training/main_ds.py", 'cuda_malloc_retries = torch.cuda.memory_stats()["num_alloc_retries"]'),),
    ),
    Redirection(
        "torch.cuda.reset_peak_memory_stats",
        "nothing",
        (("mini_trainer/train.py", "torch.cuda.reset_peak_memory_stats()"),),
    ),
)


def wanted() -> bool:
    """CPU mode applies where CUDA is absent."""
    import torch

    return not torch.cuda.is_available()


def script(backend: str) -> Path:
    """The installed script that ``backend``'s torchrun runs in each training process."""
    import importlib.util

    module, file = SCRIPTS[backend]
    found = importlib.util.find_spec(module)
    if found is None or found.origin is None:
        raise ModuleNotFoundError(f"{module} is not installed")
    return Path(found.origin).resolve().parent / file


def free_port() -> int:
    """A free TCP port on 127.0.0.1 for a local rendezvous (parallel runs must not share one)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """``os.environ`` with ``values`` set (children started inside inherit them), restored afterwards."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def launch_env(backend: str, say=print) -> Iterator[None]:
    """The environment a backend's ``run_training`` hands to torchrun: this process's, plus, where CUDA is
    absent, the CPU-mode ``sitecustomize``. Always an on-demand-checkpoint trigger file of this launch's own
    (``/dev/shm`` is shared by every run on the machine), unless the user named one; removed at the end if a
    signal left it there (one that came after the workers stopped looking)."""
    # torchrun and the backend's scripts are found on PATH next to this interpreter (a venv need not be active)
    changes = {"PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    # a kubetune name in the environment was inherited from another launch: never shared
    if os.environ.get("CHECKPOINT_TRIGGER_FILENAME", "kubetune-").startswith("kubetune-"):
        changes["CHECKPOINT_TRIGGER_FILENAME"] = f"kubetune-{os.getpid()}-{uuid.uuid4().hex}"
        sweep_triggers()
    if wanted():
        say(WARNING.format(backend=backend))
        given = os.environ.get("PYTHONPATH")  # an empty entry in it means the current directory: kept
        changes |= {ENV_FLAG: str(script(backend)), "PYTHONPATH": os.pathsep.join([str(SITE_DIR), *([given] if given else [])])}
        # the batch packers' plain Python: instructlab-training's 8 data-loader workers would each compile
        # them with numba (seconds of CPU apiece, at every start); one sft epoch of run-local: 174 s -> 98 s
        changes["NUMBA_DISABLE_JIT"] = os.environ.get("NUMBA_DISABLE_JIT", "1")  # unless the user set it
    with environment(changes):
        try:
            yield
        finally:
            if own := changes.get("CHECKPOINT_TRIGGER_FILENAME"):
                with contextlib.suppress(OSError):
                    (TRIGGER_DIR / own).unlink(missing_ok=True)


def sweep_triggers() -> list[Path]:
    """Remove the trigger files of launches whose process is gone (a SIGKILLed step cannot clean up): only
    kubetune's own names, ``kubetune-<pid>-<hex>``, and only where no process ``<pid>`` lives."""
    removed = []
    for path in TRIGGER_DIR.glob("kubetune-*-*"):
        found = _TRIGGER.fullmatch(path.name)
        if found is None or _alive(int(found.group(1))):
            continue
        with contextlib.suppress(OSError):
            path.unlink()
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def missing_sites(root: Path | None = None) -> list[str]:
    """Backend lines a redirection was written for that the installed backends (or the copies under ``root``)
    no longer have: each one means a pinned version changed and the redirection list must be checked again."""
    import importlib.util

    missing = []
    for redirection in REDIRECTIONS:
        for file, text in redirection.sites:
            base = root
            if base is None:
                found = importlib.util.find_spec(file.split("/")[0])
                if found is None or not found.submodule_search_locations:
                    continue  # that backend is not installed here
                base = Path(next(iter(found.submodule_search_locations))).parent
            source = (base / file).read_text(encoding="utf-8") if (base / file).is_file() else ""
            if text not in source:
                missing.append(f"{file}: {text} ({redirection.call})")
    return missing


def install() -> list[str]:
    """Apply every redirection in this process (a torchrun child of a backend); returns the calls redirected."""
    import torch
    import torch.distributed
    import torch.distributed.device_mesh

    real_device = torch.device

    def cpu(device):
        if isinstance(device, str) and device.split(":")[0] == "cuda":
            return "cpu"
        if isinstance(device, real_device) and device.type == "cuda":
            return real_device("cpu")
        return device

    class _DeviceType(type):
        def __instancecheck__(cls, instance):
            return isinstance(instance, real_device)

        def __subclasscheck__(cls, subclass):
            return issubclass(subclass, real_device)

    class device(metaclass=_DeviceType):  # noqa: N801 - stands in for torch.device
        def __new__(cls, kind, index=None):
            if isinstance(kind, str) and kind.split(":")[0] == "cuda":
                return real_device("cpu")
            return real_device(kind) if index is None else real_device(kind, index)

    init_process_group = torch.distributed.init_process_group

    def gloo_process_group(backend=None, *args, **kwargs):
        kwargs.pop("device_id", None)
        return init_process_group("gloo", *args, **kwargs)

    init_device_mesh = torch.distributed.device_mesh.init_device_mesh

    def cpu_device_mesh(device_type, *args, **kwargs):
        return init_device_mesh(cpu(device_type), *args, **kwargs)

    class _Counters(dict):
        def __missing__(self, key):
            return 0

    torch.device = device
    torch.distributed.init_process_group = gloo_process_group
    torch.distributed.device_mesh.init_device_mesh = cpu_device_mesh
    torch.cuda.set_device = lambda *args, **kwargs: None
    torch.cuda.current_device = lambda: real_device("cpu")
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    torch.cuda.memory_stats = lambda *args, **kwargs: _Counters()
    torch.cuda.reset_peak_memory_stats = lambda *args, **kwargs: None
    return [r.call for r in REDIRECTIONS]
