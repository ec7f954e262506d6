"""Memory plan: kubetune's plan per rank next to Training Hub's estimator (fed the same config and settings), and
next to the measured peak of a real training step on CPU (and on a GPU, when CUDA is present).

1. ``plan vs peer``: for each model config in ``benchmarks/model_configs/`` (public ``config.json`` values typed by
   hand, no weights: Llama-3.2-1B, Llama-3.1-8B, Granite-3.3-8B-Instruct, Llama-3.1-70B), each method (sft, osft
   with unfreeze_rank_ratio 0.25, lora_sft with r=16) and each setting in ``SETTINGS``, ``kubetune.memory.plan_memory``
   and ``training_hub.profiling.memory_estimator.estimate`` (0.11.2). Training Hub's estimator loads the model with
   ``AutoModel.from_pretrained`` (weights); here its ``_load_model`` builds the same class from our config on the
   meta device instead, and its CSV cache is bypassed: Training Hub's formula, fed the same config.
2. ``plan vs measured``: the embedded tiny model (and a larger generated Llama-shaped one) trains real steps in this
   process, set up as each backend sets itself up (``STEP_SETUP``), while ``LiveTensorPeak`` records the peak of
   live tensor bytes; the plan gets the same model, tokens and settings.

    python benchmarks/memory_plan.py                      # both tables
    python benchmarks/memory_plan.py --markdown           # the same as Markdown (the README's tables)
    python benchmarks/memory_plan.py --update-readme      # and write them into README.md
    python benchmarks/memory_plan.py --models llama-3.2-1b --no-measure
    python benchmarks/memory_plan.py --training-hub /path/to/training_hub-0.11.2-py3-none-any.whl

Training Hub is not a dependency of kubetune: ``--training-hub`` names its wheel, an unpacked tree or the
``memory_estimator.py`` file; without it the wheel is looked for in the cache directory and fetched there with
``pip download training-hub==0.11.2 --no-deps`` when absent.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import types
import weakref
import zipfile
from dataclasses import dataclass
from datetime import date
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "benchmarks" / "model_configs"
GIB = 2**30
PEER_VERSION = "0.11.2"
PEER_FILE = "training_hub/profiling/memory_estimator.py"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kubetune" / "benchmarks"
METHODS = ("sft", "osft", "lora_sft")
MODELS = ("llama-3.2-1b", "llama-3.1-8b", "granite-3.3-8b", "llama-3.1-70b")  # benchmarks/model_configs/<name>.json
UNFREEZE_RANK_RATIO = 0.25
LORA_R = 16


@dataclass(frozen=True)
class Setting:
    """GPUs and tokens per GPU of one step: ``max_tokens_per_gpu`` for sft/osft, ``micro_batch`` x ``seq_len``
    (the same number of tokens) for lora_sft."""

    name: str
    gpus: int
    gpu_memory_gib: int
    tokens: int
    micro_batch: int
    seq_len: int


SETTINGS = (
    Setting("8 x 80 GiB, 8192 tokens/GPU", gpus=8, gpu_memory_gib=80, tokens=8192, micro_batch=4, seq_len=2048),
    Setting("1 x 80 GiB, 4096 tokens/GPU", gpus=1, gpu_memory_gib=80, tokens=4096, micro_batch=2, seq_len=2048),
)


def spec_document(method: str, setting: Setting) -> dict[str, Any]:
    """The spec each backend gets: the method's required values plus the setting's tokens and GPUs."""
    common = {"algorithm": method, "nproc_per_node": setting.gpus, "learning_rate": 1e-5}
    if method == "lora_sft":
        return {**common, "lora_r": LORA_R, "micro_batch_size": setting.micro_batch, "max_seq_len": setting.seq_len}
    document = {
        **common,
        "max_tokens_per_gpu": setting.tokens,
        "max_seq_len": min(setting.tokens, 4096),
        "effective_batch_size": 128,
    }
    return {**document, "unfreeze_rank_ratio": UNFREEZE_RANK_RATIO} if method == "osft" else document


def our_plan(model: str, method: str, setting: Setting):
    """kubetune's plan for ``model`` (a config.json path or model URI)."""
    from kubetune.memory import plan_memory, read_model_shape
    from kubetune.validation import validate_spec

    spec = validate_spec(spec_document(method, setting), require_paths=False)
    return plan_memory(spec, read_model_shape(model), gpus_per_node=setting.gpus, nnodes=1)


# ---- Training Hub's estimator ----


class PeerUnavailable(Exception):
    """Training Hub's estimator could not be found or fetched; the message says why."""


def peer_source(where: str | None = None) -> str:
    """The text of Training Hub's ``memory_estimator.py`` from ``where`` (wheel, unpacked tree or the file), else
    from the wheel in ``CACHE``, downloaded there when absent."""
    if where is None:
        wheels = sorted(CACHE.glob(f"training_hub-{PEER_VERSION}-*.whl"))
        if not wheels:
            command = [
                sys.executable,
                "-m",
                "pip",
                "download",
                f"training-hub=={PEER_VERSION}",
                "--no-deps",
                "-q",
                "--timeout=15",
                "--retries=1",
                "-d",
                str(CACHE),
            ]
            done = subprocess.run(command, capture_output=True, text=True, timeout=300)
            wheels = sorted(CACHE.glob(f"training_hub-{PEER_VERSION}-*.whl"))
            if not wheels:
                raise PeerUnavailable(f"pip download training-hub=={PEER_VERSION} failed: {done.stderr.strip()[-300:]}")
        where = str(wheels[0])
    path = Path(where)
    if path.suffix == ".whl":
        with zipfile.ZipFile(path) as wheel:
            return wheel.read(PEER_FILE).decode()
    for candidate in (path, path / PEER_FILE, path / "training_hub" / PEER_FILE):
        if candidate.is_file():
            return candidate.read_text()
    raise PeerUnavailable(f"{where}: holds no {PEER_FILE}")


def peer_estimator(source: str) -> types.ModuleType:
    """Training Hub's estimator module from ``source``, in a private module whose ``__file__`` lies in an empty
    directory (so no ``model_storage.csv`` is read), with its model loader building from a config file on the meta
    device and its CSV cache write turned off."""
    module = types.ModuleType("training_hub_memory_estimator")
    module.__file__ = str(Path(tempfile.mkdtemp(prefix="th-estimator-")) / "memory_estimator.py")
    exec(compile(source, PEER_FILE, "exec"), module.__dict__)
    module.BasicEstimator._load_model = _load_from_config
    module.BasicEstimator._update_model_storage = lambda self: None
    return module


def _load_from_config(self, warn: str, trust_remote_code: bool = False) -> None:
    """Training Hub's ``_load_model`` with ``AutoModel.from_pretrained(path, device_map="meta")`` replaced by the
    same class built from the config file ``self.model_path`` on the meta device (then their own lines)."""
    import torch
    from transformers import AutoConfig, AutoModel

    config = json.loads(Path(self.model_path).read_text())
    with torch.device("meta"):
        self.model = AutoModel.from_config(AutoConfig.for_model(**config))
    self.num_params = self.model.num_parameters(only_trainable=False)
    self.num_trainable_params = self.model.num_parameters(only_trainable=True)
    self.num_layers = self.model.config.num_hidden_layers
    self.hidden_size = self.model.config.hidden_size


def peer_estimate(module: types.ModuleType, config: Path, method: str, setting: Setting) -> tuple[int, int, int]:
    """Training Hub's (low, expected, high) bytes per GPU for the same model, method and setting. Its LoRA
    estimator divides ``batch_size x max_seq_len`` by the GPU count, so it gets the global batch; liger off, as in
    our specs (its osft default would assume it on)."""
    common = {"num_gpus": setting.gpus, "gpu_memory": setting.gpu_memory_gib * GIB, "model_path": str(config), "verbose": 0}
    if method == "lora_sft":
        return module.estimate(
            "lora", batch_size=setting.micro_batch * setting.gpus, max_seq_len=setting.seq_len, lora_r=LORA_R, **common
        )
    extra = {"unfreeze_rank_ratio": UNFREEZE_RANK_RATIO} if method == "osft" else {}
    return module.estimate(method, max_tokens_per_gpu=setting.tokens, use_liger=False, **common, **extra)


@dataclass(frozen=True)
class PeerRow:
    model: str
    method: str
    setting: str
    plan: int
    peer: tuple[int, int, int] | None  # (low, expected, high), None without Training Hub

    @property
    def ratio(self) -> float | None:
        return self.plan / self.peer[1] if self.peer else None


def compare_with_peer(models: list[str], peer: types.ModuleType | None) -> list[PeerRow]:
    rows = []
    for name in models:
        config = CONFIGS / f"{name}.json"
        for setting in SETTINGS:
            for method in METHODS:
                estimate = peer_estimate(peer, config, method, setting) if peer else None
                rows.append(PeerRow(name, method, setting.name, our_plan(str(config), method, setting).total_bytes, estimate))
    return rows


# ---- measured on this machine ----


def live_tensor_peak():
    """A ``TorchDispatchMode`` counting the bytes of live tensor storages: those handed to ``add`` and every
    storage an operator returns, each until it is freed; ``peak`` is the most at once, checked after each operator.
    Memory an operator allocates and frees inside itself (a kernel's workspace) is not seen, nor allocator
    rounding: this is the live-tensor peak the plan claims, not the allocator's footprint."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    class LiveTensorPeak(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.live: dict[int, tuple[int, weakref.ref]] = {}
            self.current = 0
            self.peak = 0

        def add(self, tensor: torch.Tensor) -> None:
            storage = tensor.untyped_storage()
            key = id(storage)
            if key not in self.live:
                size = storage.nbytes()
                self.live[key] = (size, weakref.ref(storage, partial(self._freed, key)))
                self.current += size
                self.peak = max(self.peak, self.current)

        def _freed(self, key: int, _ref: weakref.ref) -> None:
            self.current -= self.live.pop(key)[0]

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for leaf in tree_leaves(out):
                if isinstance(leaf, torch.Tensor):
                    self.add(leaf)
            return out

    return LiveTensorPeak()


# How each backend trains, mimicked in one process (kubetune's CPU mode runs the same objects under torchrun):
# instructlab-training loads the checkpoint's dtype and enables gradient checkpointing (model.py), mini-trainer
# builds its OSFT class with osft_rank_ratio = 1 - unfreeze_rank_ratio and checkpoints every decoder layer
# (wrap_fsdp2), TRL enables gradient checkpointing for the PEFT model. AdamW over the trainable parameters.
STEP_SETUP = "fp32 (CPU), gradient checkpointing on, AdamW, one packed row of max_tokens_per_gpu tokens, 2 steps"


def build_for_step(method: str, model_dir: str, spec):
    """The model as the backend builds it for ``spec``, and its AdamW optimizer."""
    import torch
    from transformers import AutoModelForCausalLM

    if method == "osft":
        os.environ.setdefault("TESTING", "true")  # mini-trainer: sdpa where flash-attn is absent
        from mini_trainer.osft_utils import _set_osft_dtypes, create_osft_model_class, optim_wrapper
        from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
        from transformers import AutoConfig

        base = getattr(__import__("transformers"), AutoConfig.from_pretrained(model_dir).architectures[0])
        # mini-trainer 0.9.0's own non-distributed path passes the path twice (TypeError); these are its next steps
        model = create_osft_model_class(base).from_pretrained(
            model_dir, dtype=torch.float32, fsdp2_lazy_init=False, initialize_osft=False,
            rank_ratio=1.0 - spec.params["unfreeze_rank_ratio"],
        )  # fmt: skip
        model.reinitialize_osft(decompose_existing_weights=True)
        _set_osft_dtypes(model, torch.float32, torch.float32)
        model.config.use_cache = False  # wrap_fsdp2 turns the KV cache off (recomputed layers would append to it)
        layers = model.model.layers
        for index, block in enumerate(layers):  # wrap_fsdp2's activation checkpointing, without FSDP
            layers[index] = checkpoint_wrapper(block, preserve_rng_state=True)
        trainable = [p for p in model.parameters() if p.requires_grad]
        return model, optim_wrapper(torch.optim.AdamW(trainable, lr=1e-5), model)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if method == "lora_sft":
        from peft import LoraConfig, get_peft_model

        from kubetune.backends.lora import LoRASFT

        model = get_peft_model(model, LoraConfig(**LoRASFT().lora_config_kwargs(spec)))
        model.enable_input_require_grads()
    # instructlab-training: gradient_checkpointing_enable() (defaults); TRL with a PEFT model: use_reentrant=True
    model.activation_checkpointing_enable({"use_reentrant": True} if method == "lora_sft" else None)
    model.config.use_cache = False
    trainable = [p for p in model.parameters() if p.requires_grad]
    return model, torch.optim.AdamW(trainable, lr=1e-5)


def measure_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass(frozen=True)
class Measured:
    peak: int  # bytes at the peak of the steps, everything included
    parameters: int  # what the model's parameters hold
    optimizer: int  # what AdamW's states hold after the steps


def measure_step(method: str, model_dir: str, spec, tokens: int, steps: int = 2) -> Measured:
    """Peak bytes of ``steps`` real training steps (forward, backward, optimizer step, zero_grad) on one packed row
    of ``tokens`` tokens, parameters and buffers included: ``torch.cuda.max_memory_allocated`` under bfloat16
    autocast where CUDA is present (the backends' mixed precision), else ``live_tensor_peak`` in float32."""
    import torch

    device = measure_device()
    torch.manual_seed(0)
    with contextlib.redirect_stdout(io.StringIO()):  # mini-trainer narrates its OSFT set-up on stdout
        model, optimizer = build_for_step(method, model_dir, spec)
    model.to(device).train()
    ids = torch.randint(0, model.config.vocab_size, (1, tokens), device=device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        tracker, precision = None, torch.autocast("cuda", dtype=torch.bfloat16)
    else:
        tracker, precision = live_tensor_peak(), contextlib.nullcontext()
        for tensor in (*model.parameters(), *model.buffers(), ids):
            tracker.add(tensor)
    with tracker or contextlib.nullcontext():
        for _ in range(steps):
            with precision:
                loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            del loss
    states = [v for state in optimizer.state.values() for v in state.values() if torch.is_tensor(v)]
    return Measured(
        tracker.peak if tracker else torch.cuda.max_memory_allocated(),
        sum({p.untyped_storage().data_ptr(): p.untyped_storage().nbytes() for p in model.parameters()}.values()),
        sum(v.untyped_storage().nbytes() for v in states),
    )


def generated_model(folder: Path, hidden: int, layers: int) -> str:
    """A Llama-architecture model like the embedded tiny one, ``hidden`` wide and ``layers`` deep, written once."""
    from kubetune.embedded.tiny_model import build_model

    path = folder / f"llama-h{hidden}-l{layers}"
    if not (path / "config.json").is_file():
        build_model(512, hidden_size=hidden, num_layers=layers).save_pretrained(path)
    return str(path)


def plan_on_this_machine(model: str, method: str, tokens: int):
    """kubetune's plan for the step ``measure_step`` runs here: one rank, computed in float32 where CUDA is absent
    (the CPU backends train in float32: no mixed precision without an accelerator)."""
    import torch

    from kubetune.memory import plan_memory, read_model_shape
    from kubetune.validation import validate_spec

    spec = validate_spec(spec_document(method, Setting("here", 1, 0, tokens, 1, tokens)), require_paths=False)
    return plan_memory(spec, read_model_shape(model), compute_dtype=None if torch.cuda.is_available() else "float32")


@dataclass(frozen=True)
class MeasuredRow:
    model: str
    method: str
    tokens: int
    plan: int  # allocated_bytes: the plan without its CUDA allowance
    measured: int
    parameters: tuple[int, int]  # (planned, measured)
    optimizer: tuple[int, int]

    @property
    def error(self) -> float:
        """(plan - measured) / measured: positive where the plan is above."""
        return (self.plan - self.measured) / self.measured


def gib(value: float) -> str:
    return f"{value / GIB:.1f}"


def peer_table(rows: list[PeerRow]) -> list[list[str]]:
    head = [
        "model",
        "method",
        "setting",
        "kubetune plan (GiB/rank)",
        "Training Hub expected (GiB/GPU)",
        "Training Hub low-high",
        "plan / expected",
    ]
    body = [
        [r.model, r.method, r.setting, gib(r.plan), gib(r.peer[1]) if r.peer else "-",
         f"{gib(r.peer[0])}-{gib(r.peer[2])}" if r.peer else "-", f"{r.ratio:.2f}" if r.ratio else "-"]
        for r in rows
    ]  # fmt: skip
    return [head, *body]


def measured_table(rows: list[MeasuredRow]) -> list[list[str]]:
    head = ["model", "method", "tokens", "kubetune plan (MiB)", "measured peak (MiB)", "plan error"]
    body = [
        [r.model, r.method, str(r.tokens), f"{r.plan / 2**20:.2f}", f"{r.measured / 2**20:.2f}", f"{r.error:+.1%}"] for r in rows
    ]
    return [head, *body]


MEASURED_MODELS: dict[str, tuple[int, int] | None] = {"tiny-llama": None, "llama-h256-l4": (256, 4)}  # None: embedded
MEASURED_TOKENS = 512  # the generated models' max_position_embeddings
CPU_TOLERANCE = 0.25  # the plan may exceed the measured peak by this share, never fall below it (the test's bound)


def measure_rows(folder: Path | None = None, models: tuple[str, ...] = tuple(MEASURED_MODELS)) -> list[MeasuredRow]:
    """Plan vs measured for each method on the embedded tiny model and the generated larger one."""
    from kubetune.embedded.tiny_model import write_tiny_model

    folder = folder or Path(tempfile.mkdtemp(prefix="memory-plan-"))
    rows = []
    for name in models:
        size = MEASURED_MODELS[name]
        model_dir = generated_model(folder, *size) if size else str(write_tiny_model(folder / name))
        for method in METHODS:
            plan = plan_on_this_machine(model_dir, method, MEASURED_TOKENS)
            got = measure_step(method, model_dir, plan.spec, MEASURED_TOKENS)
            parts = plan.parts
            rows.append(
                MeasuredRow(
                    name, method, MEASURED_TOKENS, plan.allocated_bytes, got.peak,
                    (parts["parameters"], got.parameters), (parts.get("optimizer", 0), got.optimizer),
                )
            )  # fmt: skip
    return rows


def render(table: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(row) + " |" for row in table]
        return "\n".join([lines[0], "|" + "---|" * len(table[0]), *lines[1:]])
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in table)


def update_readme(readme: Path, tables: list[list[list[str]]], day: str) -> None:
    """Replace each table in ``readme`` whose header row is a table's header by that table (as Markdown), and the
    run date of the memory-plan section."""
    lines = readme.read_text().splitlines()
    for table in tables:
        head = render(table[:1], markdown=True).splitlines()[0]
        start = lines.index(head)
        end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
        lines[start:end] = render(table, markdown=True).splitlines()
    text = "\n".join(lines) + "\n"
    readme.write_text(re.sub(r"(## Memory plan\n.*?\nRun on )\d{4}-\d{2}-\d{2}", rf"\g<1>{day}", text, count=1, flags=re.S))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS), help="config names in benchmarks/model_configs, comma-separated")
    parser.add_argument("--training-hub", help="Training Hub's wheel, unpacked tree or memory_estimator.py")
    parser.add_argument("--no-peer", action="store_true", help="kubetune's plan only")
    parser.add_argument("--no-measure", action="store_true", help="skip the measured steps on this machine")
    parser.add_argument("--markdown", action="store_true", help="Markdown tables (the README's)")
    parser.add_argument(
        "--update-readme", action="store_true", help="write the tables (all models, with Training Hub) into README.md"
    )
    args = parser.parse_args(argv)

    peer, note = None, "Training Hub's formula, fed the same config (its model loader builds the class on the meta device)"
    if not args.no_peer:
        try:
            peer = peer_estimator(peer_source(args.training_hub))
        except PeerUnavailable as exc:
            note = f"Training Hub's estimator unavailable: {exc}"
    if args.update_readme and (peer is None or args.no_measure or args.models != ",".join(MODELS)):
        parser.error("--update-readme needs every model, Training Hub and the measured steps")
    print(f"Plan vs Training Hub {PEER_VERSION}: {note}; {date.today()}\n")
    tables = [peer_table(compare_with_peer(args.models.split(","), peer))]
    print(render(tables[0], args.markdown))
    if not args.no_measure:
        print(f"\nPlan vs measured on {measure_device()}: {STEP_SETUP}\n")
        tables.append(measured_table(measure_rows()))
        print(render(tables[1], args.markdown))
    if args.update_readme:
        update_readme(ROOT / "README.md", tables, str(date.today()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
