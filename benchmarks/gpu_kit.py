"""GPU proof kit: train sft, osft (on and off, with validation) and lora_sft through Unsloth on one GPU, through
our training step, with validation loss, the train-step benchmark's ratios and the tests marked ``gpu``.

The GPU machine (``device`` tool: Python 3.12, torch 2.11 cu130, transformers 5.17, no network) lacks the
backends, so they travel as Python 3.12 manylinux wheels, at most 64 MiB per call. Two environments, because
the released metadata disagree: mini-trainer 0.9.0 needs ``datasets>=5``, Unsloth 2026.10.9 ``datasets<5`` (and
``trl<=1.15``). ``core`` (``/tmp/kubetune-gpu/core``) holds kubetune and the three backends; ``unsloth``
(``/tmp/kubetune-gpu/unsloth``, put before ``core``) holds Unsloth, its needs and datasets 4.

    python benchmarks/gpu_kit.py              # here: gather the wheels into .whl/, check them, print the device calls
    python benchmarks/gpu_kit.py --dry-run    # the same, then the on-GPU path here on CPU with tiny settings
    python3 benchmarks/gpu_kit.py gpu --install .whl/1                   # there, call 1 (the machine stays warm 30 s)
    python3 benchmarks/gpu_kit.py gpu --install .whl/2 --run cases --out "$OUT"   # there, call 2
    python3 benchmarks/gpu_kit.py gpu --run bench,pytest --out "$OUT"             # there, call 3 (each under 10 min)

Nothing is downloaded on the GPU machine: the model is a Llama-architecture model generated there, the data
our generated chat samples, prepared by our preparation step.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ADDOPTS = "addopts=--import-mode=importlib -ra"  # no pytest-xdist on the GPU machine: one process there
ROOT = Path(__file__).resolve().parent.parent

PLATFORMS = [f"manylinux_2_{n}_x86_64" for n in (17, 24, 27, 28, 31, 34, 35)] + ["manylinux2014_x86_64", "manylinux1_x86_64"]
# (call, environment) -> wheels; call 1 and call 2 each stay under the 64 MiB a call may carry
WHEELS: dict[tuple[str, str], list[str]] = {
    ("1", "core"): [
        "trl==1.15.0",  # Unsloth's cap; our floor
        "datasets==5.2.0", "dill==0.4.1", "multiprocess==0.70.19", "fsspec==2026.9.0",
        "instructlab-training==0.16.2", "rhai-innovation-mini-trainer==0.9.0", "deprecated==1.3.1",
        "peft==0.21.2", "pydantic==2.14.4", "pydantic-core==2.50.5", "annotated-types==0.8.0",
        "typing-inspection==0.4.5", "orjson==3.13.0",
    ],
    ("1", "unsloth"): [
        "unsloth==2026.10.9", "unsloth-zoo==2026.10.9", "datasets==4.8.5", "fsspec==2026.2.0", "xformers==0.0.35",
        "torchao==0.18.0", "cut-cross-entropy==25.1.1", "diffusers==0.42.1", "importlib-metadata==8.7.0",
        "tyro==1.0.17", "docstring-parser==0.18.0", "typeguard==4.6.1", "hf-transfer==0.1.9", "json5==0.17.3",
        "nest-asyncio==1.6.0", "structlog==26.1.0", "msgspec==0.22.0", "certifi==2026.10.19.post1",
    ],
    ("2", "unsloth"): ["bitsandbytes==0.50.2"],
}  # fmt: skip
# what the GPU machine has (device README, KINDS.md): versions where known, else None
GPU_HAS: dict[str, str | None] = {
    "torch": "2.11.0", "torchvision": "0.26.0", "torchaudio": "2.11.0", "triton": "3.6.0", "transformers": "5.17.0",
    "accelerate": "1.15.0", "huggingface-hub": "1.33.0", "numpy": "2.5.2", "safetensors": "0.8.0",
    "tokenizers": "0.23.2", "sentencepiece": "0.2.2",
    **dict.fromkeys([
        "aiofiles", "aiohttp", "anyio", "click", "einops", "filelock", "httpx", "jinja2", "networkx", "ninja", "numba",
        "packaging", "pandas", "pillow", "protobuf", "psutil", "py-cpuinfo", "pyarrow", "pytest", "pyyaml", "regex",
        "requests", "rich", "setuptools", "tensorboard", "tqdm", "typer", "typing-extensions", "wheel", "wrapt",
        "xxhash", "zipp",
    ]),
}  # fmt: skip
# kubetune's requirements the training, preparation and evaluation steps never import (tests/benchmarks/test_gpu_kit.py checks)
NOT_NEEDED = {"kfp": "KFP wrappers only", "kfp-kubernetes": "KFP wrappers only"}
SITE = Path("/tmp/kubetune-gpu")
CASES: dict[str, dict[str, Any]] = {
    "sft": {"algorithm": "sft", "max_tokens_per_gpu": 4096, "learning_rate": 5e-4},
    "osft": {"algorithm": "osft", "max_tokens_per_gpu": 4096, "learning_rate": 5e-4, "unfreeze_rank_ratio": 0.5,
             "validate_at_epoch": True},
    "osft-off": {"algorithm": "osft", "osft": False, "max_tokens_per_gpu": 4096, "learning_rate": 5e-4,
                 "validate_at_epoch": True},
    "lora_sft": {"algorithm": "lora_sft", "learning_rate": 2e-3, "lora_r": 16, "eval_strategy": "epoch"},
}  # fmt: skip
SIZES = {"gpu": {"hidden": 1024, "layers": 8, "samples": 800}, "cpu": {"hidden": 64, "layers": 2, "samples": 64}}


def say(line: str) -> None:
    print(line, flush=True)


# ---- here: gather and check the wheels ----


def gather(dest: Path) -> dict[tuple[str, str], list[Path]]:
    """Download every wheel (and build kubetune's) into ``dest/<call>/<environment>/``."""
    found = {}
    for (call, env), names in WHEELS.items():
        folder = dest / call / env
        folder.mkdir(parents=True, exist_ok=True)
        platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
        pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12"]
        subprocess.run([*pip, "--implementation", "cp", *platforms, "-q", "-d", str(folder), *names], check=True)
        if (call, env) == ("1", "core"):
            for old in folder.glob("kubetune-*.whl"):
                old.unlink()
            leftover = not (ROOT / "build").exists()  # setuptools builds in the tree: remove what it leaves
            subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(folder), str(ROOT)], check=True)
            if leftover:
                shutil.rmtree(ROOT / "build", ignore_errors=True)
        for stale in set(folder.glob("*.whl")) - set(pinned_files(folder, names)):  # an earlier list's: one version each
            stale.unlink()
        found[(call, env)] = sorted(folder.glob("*.whl"))
    for call in {c for c, _ in WHEELS}:
        size = sum(p.stat().st_size for p in (dest / call).rglob("*.whl")) / 2**20
        say(f"[gpu_kit] call {call}: {size:.1f} MiB of wheels (limit 64 MiB with the working tree)")
    return found


def pinned_files(folder: Path, pins: list[str]) -> list[Path]:
    """The wheels in the kit's ``folder`` that ``pins`` (``name==version``) name, and kubetune's."""
    from packaging.utils import canonicalize_name, parse_wheel_filename

    wanted = {(canonicalize_name(n), v) for n, v in (pin.split("==") for pin in pins)}
    found = []
    for path in folder.glob("*.whl"):
        name, version, *_ = parse_wheel_filename(path.name)
        if (name, str(version)) in wanted or name == "kubetune":
            found.append(path)
    return found


def unmet(wheels: dict[tuple[str, str], list[Path]]) -> list[str]:
    """Requirements (for Linux x86-64, Python 3.12) that neither the environment's wheels nor the GPU machine meet."""
    import zipfile

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name, parse_wheel_filename

    markers = {"sys_platform": "linux", "platform_machine": "x86_64", "python_version": "3.12", "extra": ""}
    versions = {env: {} for env in ("core", "unsloth")}
    metadata: dict[str, list[tuple[str, str]]] = {"core": [], "unsloth": []}
    for (_, env), paths in wheels.items():
        for path in paths:
            name, version, *_ = parse_wheel_filename(path.name)
            versions[env][name] = str(version)
            with zipfile.ZipFile(path) as z:
                text = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
            requires = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Requires-Dist:")]
            metadata[env] += [(name, line) for line in requires]
    problems = []
    for env in ("core", "unsloth"):
        have = {**{canonicalize_name(k): v for k, v in GPU_HAS.items()}, **versions["core"]}
        if env == "unsloth":
            have |= versions["unsloth"]
        for owner, line in metadata[env]:
            req = Requirement(line)
            if req.marker and not req.marker.evaluate(markers):
                continue
            name = canonicalize_name(req.name)
            if owner == "kubetune" and name in NOT_NEEDED:
                continue
            if name not in have:
                problems.append(f"{env}: {owner} needs {req}, which nothing provides")
            elif have[name] is not None and not req.specifier.contains(have[name], prereleases=True):
                problems.append(f"{env}: {owner} needs {req}, the environment has {have[name]}")
    return problems


def device_calls(dest: Path) -> list[dict[str, Any]]:
    """The ``device`` tool's ``run`` calls, in order, on one warm machine (it is given back 30 s after a call)."""
    rel = dest.relative_to(ROOT)
    gpu = "PYTHONUNBUFFERED=1 python3 benchmarks/gpu_kit.py gpu"
    return [
        {"carry": [f"{rel}/1"], "timeout_s": 300, "command": f"{gpu} --install {rel}/1"},
        {"carry": [f"{rel}/2"], "timeout_s": 600, "command": f'{gpu} --install {rel}/2 --run cases --out "$OUT"'},
        {"carry": [], "timeout_s": 600, "command": f'{gpu} --run bench,pytest --out "$OUT"'},
    ]


# ---- there: install and run ----


def install(folder: Path) -> None:
    """pip-install each environment's wheels (no index, no dependencies) into ``/tmp/kubetune-gpu/<env>``."""
    for env_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        target = SITE / env_dir.name
        wheels = sorted(str(p) for p in env_dir.glob("*.whl"))
        pip = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--upgrade"]
        subprocess.run([*pip, "--target", str(target), *wheels], check=True)
        say(f"[gpu_kit] installed {len(wheels)} wheels into {target}")


def environment(env: str) -> dict[str, str]:
    """The process environment of ``core`` or ``unsloth`` (unsloth first, then core); nothing changes where the
    wheels were not installed (the CPU dry run uses this machine's environment)."""
    layers = [SITE / "unsloth", SITE / "core"] if env == "unsloth" else [SITE / "core"]
    path = [str(p) for p in layers if p.is_dir()]
    variables = dict(os.environ)
    if path:
        variables["PYTHONPATH"] = os.pathsep.join([*path, *filter(None, [os.environ.get("PYTHONPATH")])])
        variables["PATH"] = os.pathsep.join([*(f"{p}/bin" for p in path), os.environ.get("PATH", "")])
    variables["PYTHONUNBUFFERED"] = "1"
    return variables


def run_case(name: str, work: Path, epochs: int = 2) -> dict[str, Any]:
    """Train one case through our training step on the prepared data (with our validation split) and measure
    the validation loss of every checkpoint with our evaluation step."""
    import torch

    from kubetune.steps.evaluate import evaluate
    from kubetune.steps.train import train
    from kubetune.validation import load_spec

    document = {"effective_batch_size": 8, "max_seq_len": 512, "num_epochs": epochs, **CASES[name]}
    kwargs = work / f"{name}.json"
    kwargs.write_text(json.dumps(document))
    out = work / f"run-{name}"
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    result = train(load_spec(kwargs, require_paths=False), str(work / "model"), work / "train", out, work / "val")
    seconds = time.perf_counter() - start
    points = evaluate(result.output_dir, work / "val", base_model=str(work / "model"))
    unsloth = "unsloth" in sys.modules  # lora_sft imports it only on its Unsloth path
    return {
        "case": name,
        "kwargs": document,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "seconds": round(seconds, 1),
        "lora_loader": ("unsloth" if unsloth else "peft") if document["algorithm"] == "lora_sft" else None,
        "final_train_loss": result.metrics.get("final_train_loss"),
        "val_loss": {p.checkpoint: round(p.loss, 4) for p in points},
        "backend_val_loss": backend_val_losses(result.output_dir),
        "peak_memory_gb": peak_memory_gb(document["algorithm"], result.output_dir),
    }


def backend_val_losses(out: Path) -> list[float]:
    """Validation losses the backend itself logged (mini-trainer through our callback, TRL's eval_loss)."""
    log = out / "kubetune_validation_0.jsonl"
    if log.is_file():
        return [round(json.loads(line)["val_loss"], 4) for line in log.read_text().splitlines() if line.strip()]
    state = out / "trainer_state.json"
    if state.is_file():
        return [round(e["eval_loss"], 4) for e in json.loads(state.read_text())["log_history"] if "eval_loss" in e]
    return []


def peak_memory_gb(algorithm: str, out: Path) -> float | None:
    """Peak GPU memory: mini-trainer's ``peak_memory_usage_GB``, instructlab's largest ``cuda_mem_allocated``
    (it logs no peak), this process's peak for TRL. None on CPU."""
    import torch

    if not torch.cuda.is_available():
        return None
    if algorithm == "lora_sft":
        return round(torch.cuda.max_memory_allocated() / 2**30, 3)
    name, key = (
        ("training_metrics_0.jsonl", "peak_memory_usage_GB")
        if algorithm == "osft"
        else ("training_params_and_metrics_global0.jsonl", "cuda_mem_allocated")
    )
    rows = [json.loads(line) for line in (out / name).read_text().splitlines() if line.strip()]
    return round(max((r[key] for r in rows if isinstance(r.get(key), (int, float))), default=0.0), 3)


def run_on_device(parts: set[str], out: Path, work: Path, size: dict[str, int], repeat: int) -> dict[str, Any]:
    """Everything the kit proves, each part in its own processes and environment; the report lands in ``out``."""
    from train_step import write_data, write_model

    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    report_path = work / "gpu-kit.json"  # kept in work: the device empties $OUT before each call
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    if not (work / "model" / "config.json").exists():
        write_model(work / "model", size["hidden"], size["layers"])
        write_data(work / "model", work, size["samples"], validation_ratio=0.1)
    kit = [sys.executable, str(Path(__file__).resolve())]
    logs = (work / "gpu-kit.log").open("a")
    if "cases" in parts:
        report["cases"] = []
        for name in CASES:
            env = "unsloth" if CASES[name]["algorithm"] == "lora_sft" else "core"
            code = _step(logs, [*kit, "case", name, "--work", str(work)], env, f"case {name}")
            result = work / f"case-{name}.json"
            ok = code == 0 and result.is_file()
            report["cases"].append(json.loads(result.read_text()) if ok else {"case": name, "failed": code})
    if "bench" in parts:
        report["bench"] = {}
        for env, algorithms in (("core", "sft,osft"), ("unsloth", "lora_sft")):
            result = work / f"bench-{env}.json"
            bench = [sys.executable, str(ROOT / "benchmarks/train_step.py"), "--algorithms", algorithms, "--json", str(result)]
            size_args = ["--hidden", str(size["hidden"]), "--layers", str(size["layers"]), "--samples", str(size["samples"])]
            code = _step(logs, [*bench, *size_args, "--repeat", str(repeat)], env, f"train-step benchmark {algorithms}")
            if code == 0:
                report["bench"].update(json.loads(result.read_text())["ratios"])
            else:
                report["bench"].update(dict.fromkeys(algorithms.split(","), {"failed": code}))
    if "pytest" in parts:
        report["pytest"] = {}
        for env, selection in (("core", "not unsloth"), ("unsloth", "unsloth")):
            xml = out / f"gpu-tests-{env}.xml"
            command = [sys.executable, "-P", "-m", "pytest", "-o", ADDOPTS, "-m", "gpu", "-k", selection]
            command.append("tests/backends/test_gpu.py")
            command += ["-q", "-rs"]
            code = _step(logs, [*command, f"--junitxml={xml}"], env, f"pytest -m gpu -k {selection!r}")
            report["pytest"][env] = f"exit {code}, {junit_counts(xml)}"
    logs.close()
    report_path.write_text(json.dumps(report, indent=2))
    for name in ("gpu-kit.json", "gpu-kit.log"):
        shutil.copyfile(work / name, out / name)
    (out / "gpu-kit.md").write_text(summary(report))
    say(summary(report))
    return report


def _step(logs, command: list[str], env: str, title: str) -> int:
    say(f"[gpu_kit] {title} ({env} environment)")
    logs.write(f"\n===== {title} ({env}) =====\n")
    logs.flush()
    done = subprocess.run(command, cwd=ROOT, env=environment(env), stdout=logs, stderr=subprocess.STDOUT)
    say(f"[gpu_kit] {title}: exit {done.returncode}")
    return done.returncode


def junit_counts(xml: Path) -> str:
    """``N tests, F failed, E errors, S skipped`` from pytest's JUnit XML."""
    import xml.etree.ElementTree as ET

    if not xml.is_file():
        return "no report"
    suite = ET.parse(xml).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {k: suite.get(k, "0") for k in ("tests", "failures", "errors", "skipped")}
    return f"{counts['tests']} tests, {counts['failures']} failed, {counts['errors']} errors, {counts['skipped']} skipped"


def summary(report: dict[str, Any]) -> str:
    lines = ["| case | device | loader | s | final train loss | val loss (ours, per checkpoint) | backend val loss | peak GiB |"]
    lines.append("|---|---|---|---|---|---|---|---|")
    for c in report.get("cases", []):
        if "failed" in c:
            lines.append(f"| {c['case']} | FAILED (exit {c['failed']}, see gpu-kit.log) | | | | | | |")
            continue
        losses = ", ".join(f"{v}" for v in c["val_loss"].values())
        lines.append(
            f"| {c['case']} | {c['device']} | {c['lora_loader'] or '-'} | {c['seconds']} | {c['final_train_loss']} | "
            f"{losses} | {', '.join(map(str, c['backend_val_loss'])) or '-'} | {c['peak_memory_gb']} |"
        )
    for algorithm, ratio in report.get("bench", {}).items():
        if "failed" in ratio:
            lines.append(f"train-step benchmark {algorithm}: FAILED (exit {ratio['failed']})")
        else:
            lines.append(
                f"train-step benchmark {algorithm}, ours / bare tokens/s: whole call {ratio['call']:.3f}x wall, "
                f"{ratio['cpu']:.3f}x CPU time; training loop {ratio['loop']:.3f}x wall"
            )
    for env, outcome in report.get("pytest", {}).items():
        lines.append(f"pytest -m gpu ({env}): {outcome}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="where")
    parser.add_argument("--dry-run", action="store_true", help="after gathering, run the on-GPU path here on CPU, tiny")
    parser.add_argument("--dest", type=Path, default=ROOT / ".whl", help="where the wheels go (git-ignored)")
    gpu = sub.add_parser("gpu", help="on the GPU machine: install carried wheels, run parts")
    gpu.add_argument("--install", type=Path, help="a folder of <environment>/ wheel folders to install")
    gpu.add_argument("--run", default="", help="comma-separated: cases, bench, pytest (or all)")
    gpu.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu-kit-out")))
    gpu.add_argument("--work", type=Path, default=SITE / "work")
    gpu.add_argument("--repeat", type=int, default=1)
    case = sub.add_parser("case", help="one case, in this process (the kit runs it)")
    case.add_argument("name", choices=list(CASES))
    case.add_argument("--work", type=Path, required=True)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # train_step, beside this file

    if args.where == "case":
        result = run_case(args.name, args.work)
        (args.work / f"case-{args.name}.json").write_text(json.dumps(result, indent=2))
        return
    if args.where == "gpu":
        if args.install:
            install(args.install)
        if args.run:
            parts = {"cases", "bench", "pytest"} if args.run == "all" else set(args.run.split(","))
            run_on_device(parts, args.out, args.work, SIZES["gpu"], args.repeat)
        return
    args.dest = args.dest.resolve()
    args.dest.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["git", "check-ignore", "-q", str(args.dest)], cwd=ROOT).returncode != 0:
        raise SystemExit(f"{args.dest} is not git-ignored: the wheels would travel with every device call")
    problems = unmet(gather(args.dest))
    for problem in problems:
        say(f"[gpu_kit] unmet: {problem}")
    say(f"[gpu_kit] {len(problems)} unmet requirement(s) (names the GPU machine has without a known version are not judged)")
    say("[gpu_kit] device tool calls, in order, one right after the other (the machine is given back 30 s after a call):")
    for call in device_calls(args.dest):
        say(json.dumps(call))
    if args.dry_run:
        import tempfile

        say("[gpu_kit] DRY RUN on this machine: no GPU, tiny model; sft/osft in CPU mode, lora_sft through PEFT (no Unsloth)")
        tmp = Path(tempfile.mkdtemp(prefix="kubetune-gpu-kit-"))
        run_on_device({"cases", "bench", "pytest"}, tmp / "out", tmp / "work", SIZES["cpu"], 1)
        say(f"[gpu_kit] dry-run report and logs: {tmp / 'out'}")


if __name__ == "__main__":
    main()
