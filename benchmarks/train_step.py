"""Training step: tokens/s of our training step vs the bare backend call, same model, data and settings, in one run.

For each algorithm both sides train the same generated Llama-architecture model on the same prepared data with
the same configuration objects (the ones our backend builds from the same spec):

- ``ours``: ``kubetune.steps.train.train`` (validation, binding, backend launch, reading results back).
- ``bare``: the backend's own entry point on those objects: instructlab-training's and mini-trainer's
  ``run_training(torch_args, train_args)``, TRL's ``SFTTrainer(...).train()`` (with Unsloth's loader on CUDA
  where Unsloth is installed, PEFT's otherwise). Where CUDA is absent the two torchrun backends cannot start
  at all without CPU mode, so the bare call gets the same redirection (``kubetune.backends.cpu_mode.launch_env``)
  and, without flash-attn, mini-trainer's own switch to sdpa (``TESTING=true``): environment, not our step.

Tokens are counted by the backend itself on both sides (instructlab ``num_tokens_rank0``, mini-trainer
``num_total_tokens``, TRL ``num_tokens``: every token of every step). Three speeds per side:

- ``wall``: all tokens / wall time of the whole call (setup included on both sides: process start, model
  load, saves; config objects are built before the bare call's clock starts, inside ours).
- ``cpu``: all tokens / CPU time of the whole call (this process and its children: torchrun's workers).
- ``loop``: the backend's own training-loop time (steps 2..N by its step timestamps for the torchrun
  backends, ``train_runtime`` for TRL) and the tokens of those steps.

Each round runs ours and bare back to back, the order alternating by round; a ratio (ours / bare tokens/s,
target >= 0.97x) is the median over rounds of the ratio within a round. It is judged on wall time on a GPU
machine (lent whole) and on CPU time on a CPU machine, whose wall time follows the load of whatever else runs.

    python benchmarks/train_step.py --quick            # the tiny model, 64 samples, 1 round
    python benchmarks/train_step.py --repeat 3         # hidden 256 x 4 layers, 256 samples, 3 rounds
    python benchmarks/train_step.py --hidden 1024 --layers 8 --samples 800    # on a GPU
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

ALGORITHMS = ("sft", "osft", "lora_sft")
TARGET = 0.97


@dataclass
class Run:
    algorithm: str
    side: str  # "ours" or "bare"
    call_s: float  # wall time of the whole call
    cpu_s: float  # CPU time of the whole call: this process and its children (torchrun's workers)
    loop_s: float  # the backend's own training-loop time
    tokens: int  # every token of every step
    loop_tokens: int  # tokens of the steps inside loop_s

    @property
    def call_tps(self) -> float:
        return self.tokens / self.call_s

    @property
    def cpu_tps(self) -> float:
        return self.tokens / self.cpu_s

    @property
    def loop_tps(self) -> float:
        return self.loop_tokens / self.loop_s if self.loop_s > 0 else float("nan")


def say(line: str) -> None:
    print(line, flush=True)


def write_model(path: Path, hidden: int = 64, layers: int = 2) -> Path:
    """A randomly initialised LlamaForCausalLM of the given size with the embedded tokenizer (offline)."""
    from kubetune.embedded.tiny_model import build_model, build_tokenizer, write_tiny_model

    if (hidden, layers) == (64, 2):
        return write_tiny_model(path)
    if (path / "config.json").exists():
        return path
    tokenizer = build_tokenizer()
    model = build_model(len(tokenizer), hidden_size=hidden, num_layers=layers)
    for config in (model.config, model.generation_config):
        config.eos_token_id, config.pad_token_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def write_data(model: Path, workdir: Path, samples: int, validation_ratio: float = 0.0) -> tuple[Path, Path]:
    """Generated chat samples prepared by our preparation step: (train, validation) directories."""
    from kubetune.embedded.sample_data import generate
    from kubetune.steps.prepare import prepare

    raw = workdir / "chat.jsonl"
    raw.write_text("".join(json.dumps(s) + "\n" for s in generate(samples, seed=7)), encoding="utf-8")
    train, val = workdir / "train", workdir / "val"
    prepare(str(raw), str(model), train, val, validation_ratio=validation_ratio, max_seq_len=512, num_proc=1)
    return train, val


def spec_document(algorithm: str, epochs: int = 1) -> dict[str, Any]:
    """The same settings for both sides: one epoch, batches of 8, no validation."""
    common = {"algorithm": algorithm, "effective_batch_size": 8, "max_seq_len": 512, "learning_rate": 1e-4, "num_epochs": epochs}
    if algorithm == "sft":
        return {**common, "max_tokens_per_gpu": 4096}
    if algorithm == "osft":
        return {**common, "max_tokens_per_gpu": 4096, "unfreeze_rank_ratio": 0.5}
    return {**common, "lora_r": 16, "lora_alpha": 32}


@contextlib.contextmanager
def clock() -> Iterator[dict[str, float]]:
    """Wall and CPU seconds of the block (CPU: this process and the children it waited for, with theirs)."""

    def cpu() -> float:
        me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime

    times: dict[str, float] = {}
    wall, used = time.perf_counter(), cpu()
    yield times
    times.update(wall=time.perf_counter() - wall, cpu=cpu() - used)


def ours(kwargs_path: Path, model: Path, train: Path, out: Path) -> tuple[dict[str, float], dict]:
    """Our training step, timed whole; the TRL log history it saved (empty for the torchrun backends)."""
    from kubetune.steps.train import train as train_step
    from kubetune.validation import load_spec

    spec = load_spec(kwargs_path, require_paths=False)  # what the validation step hands the training step
    with clock() as times:
        train_step(spec, str(model), train, out)
    state = out / "checkpoints" / "trainer_state.json"
    return times, json.loads(state.read_text()) if state.is_file() else {}


def bare(kwargs_path: Path, model: Path, train: Path, out: Path) -> tuple[dict[str, float], dict]:
    """The backend's own call on the configuration objects our backend builds for the same spec (built
    before the clock starts)."""
    from kubetune.backends.registry import get_backend
    from kubetune.steps.train import bind
    from kubetune.validation import validate_spec

    spec = validate_spec(json.loads(kwargs_path.read_text()), require_paths=False)
    spec = bind(spec, str(model), train, out)
    backend = get_backend(spec.algorithm)
    if spec.algorithm == "lora_sft":
        return bare_trl(backend, spec)
    import importlib

    from kubetune.backends.cpu_mode import environment, launch_env
    from kubetune.backends.torchrun import flash_attn_missing

    torch_args, train_args = backend.launch(spec)
    run_training = importlib.import_module(backend.launcher).run_training
    # mini-trainer's own sdpa switch where flash-attn is missing; CPU mode where CUDA is: needed to start at all
    env = {"TESTING": "true"} if spec.algorithm == "osft" and flash_attn_missing() else {}
    with clock() as times, environment(env), launch_env(backend.name, say):
        run_training(torch_args=torch_args, train_args=train_args)
    return times, {}


def bare_trl(backend, spec) -> tuple[dict[str, float], dict]:
    """``SFTTrainer.train`` with the same SFTConfig/LoraConfig, model loader (Unsloth on CUDA where installed,
    else transformers + PEFT) and pre-tokenized dataset."""
    from kubetune.backends.lora import unsloth_lora_kwargs, unsloth_usable

    p = spec.params
    sft_config, lora_config = backend.build(spec)
    use_unsloth = unsloth_usable() and spec.backend != "peft"
    if use_unsloth:
        from unsloth import FastLanguageModel
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTTrainer

    from kubetune.data import tokenized_file

    with clock() as times:
        if use_unsloth:
            model, tokenizer = FastLanguageModel.from_pretrained(
                model_name=p["model_path"], max_seq_length=p["max_seq_len"], dtype=None, load_in_4bit=False, load_in_8bit=False
            )
            options = unsloth_lora_kwargs(lora_config.to_dict())
            model = FastLanguageModel.get_peft_model(model, use_gradient_checkpointing="unsloth", random_state=3407, **options)
            peft_config = None
        else:
            tokenizer = AutoTokenizer.from_pretrained(p["model_path"])
            model = AutoModelForCausalLM.from_pretrained(p["model_path"])
            peft_config = lora_config
        cache = str(Path(sft_config.output_dir) / ".datasets-cache")
        dataset = Dataset.from_json(str(tokenized_file(p["data_path"])), cache_dir=cache).select_columns(["input_ids", "labels"])
        trainer = SFTTrainer(
            model=model, args=sft_config, train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config
        )
        trainer.train()
    return times, {"log_history": trainer.state.log_history}


def counted(algorithm: str, out: Path, state: dict) -> tuple[int, float, int]:
    """(all tokens, loop seconds, loop tokens) as the backend itself recorded them."""
    if algorithm == "lora_sft":
        history = state.get("log_history", [])
        tokens = max(int(e.get("num_tokens", 0)) for e in history)
        runtime = next(e["train_runtime"] for e in history if "train_runtime" in e)
        return tokens, runtime, tokens
    name, key = (
        ("training_params_and_metrics_global0.jsonl", "num_tokens_rank0")
        if algorithm == "sft"
        else ("training_metrics_0.jsonl", "num_total_tokens")
    )
    lines = (out / "checkpoints" / name).read_text().splitlines()
    rows = [r for r in map(json.loads, lines) if r.get(key) is not None and "step" in r]
    stamps = [datetime.fromisoformat(r["timestamp"]).timestamp() for r in rows]
    tokens = [int(r[key]) for r in rows]
    return sum(tokens), stamps[-1] - stamps[0], sum(tokens[1:])


def compare(
    workdir: Path,
    algorithms: tuple[str, ...] = ALGORITHMS,
    hidden: int = 64,
    layers: int = 2,
    samples: int = 64,
    repeat: int = 2,
) -> dict[str, Any]:
    """Run both sides of every algorithm back to back, the order alternating by round (ours first, then bare
    first); each ratio is the median over rounds of the ratio within a round (a pair run minutes apart at most)."""
    warm_imports(algorithms)  # first: Unsloth wants to be imported before transformers
    model = write_model(workdir / "model", hidden, layers)
    train, _ = write_data(model, workdir, samples)
    runs: list[Run] = []
    for round_ in range(repeat):
        for algorithm in algorithms:
            kwargs = workdir / f"{algorithm}.json"
            kwargs.write_text(json.dumps(spec_document(algorithm)))
            sides = [("ours", ours), ("bare", bare)]
            for side, call in sides if round_ % 2 == 0 else sides[::-1]:
                out = workdir / f"{algorithm}-{side}-{round_}"
                say(f"[train_step] round {round_ + 1}/{repeat}: {algorithm} {side}")
                times, state = call(kwargs, model, train, out)
                tokens, loop_s, loop_tokens = counted(algorithm, out, state)
                runs.append(Run(algorithm, side, times["wall"], times["cpu"], loop_s, tokens, loop_tokens))
    ratios = {}
    for a in algorithms:
        side = {name: [r for r in runs if r.algorithm == a and r.side == name] for name in ("ours", "bare")}
        pairs = list(zip(side["ours"], side["bare"], strict=True))
        ratios[a] = {
            metric: statistics.median(getattr(o, f"{metric}_tps") / getattr(b, f"{metric}_tps") for o, b in pairs)
            for metric in ("call", "cpu", "loop")
        }
        ratios[a]["same_tokens"] = all(o.tokens == b.tokens for o, b in pairs)
    setting = {"hidden": hidden, "layers": layers, "samples": samples, "repeat": repeat, "device": device_name()}
    rows = [asdict(r) | {"call_tps": r.call_tps, "cpu_tps": r.cpu_tps, "loop_tps": r.loop_tps} for r in runs]
    return {"setting": setting, "runs": rows, "ratios": ratios}


def warm_imports(algorithms: tuple[str, ...]) -> None:
    """Import what both sides import (once per process) before any clock starts: identical setup, excluded."""
    import importlib

    from kubetune.backends.lora import unsloth_usable

    names = {"sft": ["instructlab.training"], "osft": ["mini_trainer"], "lora_sft": ["datasets", "peft", "trl"]}
    if "lora_sft" in algorithms and unsloth_usable():
        names["lora_sft"].insert(0, "unsloth")  # Unsloth patches transformers and TRL: imported first
    for algorithm in algorithms:
        for name in names[algorithm]:
            importlib.import_module(name)


def device_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def table(result: dict[str, Any]) -> str:
    s = result["setting"]
    # a GPU machine is lent whole: wall time; a shared CPU machine's wall time follows its load: CPU time
    judged = "call" if s["device"] != "cpu" else "cpu"
    lines = [
        f"device {s['device']}; Llama hidden {s['hidden']} x {s['layers']} layers; {s['samples']} samples, 1 epoch; "
        f"{s['repeat']} rounds, sides alternating",
        f"{'round':<6}{'algorithm':<10} {'side':<5} {'wall s':>8} {'cpu s':>8} {'loop s':>8} {'tokens':>7} "
        f"{'wall tok/s':>11} {'cpu tok/s':>10} {'loop tok/s':>11}",
    ]
    for i, r in enumerate(result["runs"]):
        round_ = i // (2 * len(result["ratios"])) + 1
        lines.append(
            f"{round_:<6}{r['algorithm']:<10} {r['side']:<5} {r['call_s']:>8.2f} {r['cpu_s']:>8.2f} "
            f"{r['loop_s']:>8.2f} {r['tokens']:>7} {r['call_tps']:>11.0f} {r['cpu_tps']:>10.0f} {r['loop_tps']:>11.0f}"
        )
    lines.append(
        f"ratios ours / bare in tokens/s, median over rounds (target >= {TARGET}x, judged on "
        f"{'wall time' if judged == 'call' else 'CPU time: this machine is shared, its wall time follows the load'}):"
    )
    for algorithm, ratio in result["ratios"].items():
        mark = "ok" if ratio[judged] >= TARGET else "BELOW TARGET"
        same = "" if ratio["same_tokens"] else "  (token counts differ!)"
        lines.append(
            f"  {algorithm:<9} {ratio[judged]:.3f}x {mark}   (whole call: wall {ratio['call']:.3f}x, CPU {ratio['cpu']:.3f}x; "
            f"training loop: wall {ratio['loop']:.3f}x){same}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the tiny model (hidden 64, 2 layers), 64 samples")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--repeat", type=int, help="rounds, the order of the sides alternating (default 2, --quick 1)")
    parser.add_argument("--algorithms", default=",".join(ALGORITHMS))
    parser.add_argument("--json", type=Path, help="also write the result here")
    parser.add_argument("--workdir", type=Path, help="keep the runs here (default: a temporary folder)")
    args = parser.parse_args(argv)
    if args.quick:
        args.hidden, args.layers, args.samples = 64, 2, 64
    args.repeat = args.repeat or (1 if args.quick else 2)
    algorithms = tuple(a.strip() for a in args.algorithms.split(",") if a.strip())
    with tempfile.TemporaryDirectory(prefix="kubetune-train-step-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        result = compare(workdir, algorithms, args.hidden, args.layers, args.samples, args.repeat)
    print(table(result), flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
