"""Data preparation: our step vs instructlab-training's data processing, side by side in one run.

Both tokenize the same generated chat data (multi-turn, system prompts) with the same tokenizer (the
embedded tiny model's) and the same ``max_seq_len``, on the same number of worker processes. Each runs in a
fresh subprocess; peak RSS is the largest sum over that process and its workers, sampled every 50 ms.
The two alternate ``--repeat`` times and each side's fastest run counts (this machine's speed varies).

    python benchmarks/data_prep.py                  # 50,000 samples, ours vs instructlab-training
    python benchmarks/data_prep.py --gigabytes 1    # memory check: ours alone on a 1 GB JSONL file
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

OURS = """
import sys
from kubetune.steps.prepare import prepare
prepare(sys.argv[1], sys.argv[2], sys.argv[3] + "/train", sys.argv[3] + "/val", validation_ratio=0.0,
        max_seq_len=int(sys.argv[4]), num_proc=int(sys.argv[5]))
"""
INSTRUCTLAB = """
import sys
from instructlab.training.data_process import process_messages_into_input_ids
process_messages_into_input_ids(sys.argv[1], sys.argv[3], int(sys.argv[4]), sys.argv[2], int(sys.argv[5]))
"""


def generate(
    path: Path, samples: int | None = None, gigabytes: float | None = None, tasks: tuple[int, int] = (3, 6), seed: int = 0
) -> int:
    """Write multi-turn chat samples (``tasks`` tasks joined) until ``samples`` or ``gigabytes`` is reached."""
    from kubetune.embedded.sample_data import generate as sample_tasks

    rng = random.Random(seed)
    pool = [s["messages"] for s in sample_tasks(2000, seed)]
    limit = int(gigabytes * 1e9) if gigabytes else None
    written = count = 0
    with path.open("w", encoding="utf-8") as f:
        while (samples is None or count < samples) and (limit is None or written < limit):
            messages = [m for turn in rng.sample(pool, rng.randint(*tasks)) for m in turn if m["role"] != "system"]
            if rng.random() < 0.3:
                messages.insert(0, {"role": "system", "content": "You are a concise assistant."})
            line = json.dumps({"messages": messages}) + "\n"
            f.write(line)
            written += len(line.encode())
            count += 1
    return count


def measure(script: str, *args: str) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes, the process plus its children) of ``python -c script args``."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    root, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.05)
    if proc.returncode:
        raise SystemExit(f"benchmark run failed ({proc.returncode}): {script.strip().splitlines()[1]}")
    return time.perf_counter() - start, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=50_000)
    parser.add_argument("--gigabytes", type=float, help="memory mode: a file of this size, ours only")
    parser.add_argument("--max-seq-len", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--tasks", default="3,6", help="MIN,MAX tasks joined into one conversation (sample length)")
    parser.add_argument("--repeat", type=int, default=2, help="alternating runs per side; the fastest counts")
    args = parser.parse_args()

    from kubetune.embedded.tiny_model import write_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = write_tiny_model(tmp / "model")
        data = tmp / "data.jsonl"
        tasks = tuple(int(x) for x in args.tasks.split(","))
        n = generate(data, None if args.gigabytes else args.samples, args.gigabytes, tasks)
        size = data.stat().st_size
        print(f"data: {n:,} samples, {size / 1e6:,.0f} MB; tokenizer: embedded tiny model; {args.workers} workers")
        common = (str(data), str(model))
        runs = {"kubetune": OURS} if args.gigabytes else {"kubetune": OURS, "instructlab-training": INSTRUCTLAB}
        results: dict[str, tuple[float, int]] = {}
        for _ in range(1 if args.gigabytes else args.repeat):
            for name, script in runs.items():
                seconds, peak = measure(script, *common, str(tmp / name), str(args.max_seq_len), str(args.workers))
                print(f"{name:>22}: {seconds:8.1f} s  {n / seconds:10,.0f} samples/s  peak RSS {peak / 2**30:6.2f} GiB")
                best = results.get(name, (float("inf"), 0))
                results[name] = (min(best[0], seconds), max(best[1], peak))
        if len(results) == 2:
            (ours, ours_rss), (theirs, theirs_rss) = results["kubetune"], results["instructlab-training"]
            speed, memory = theirs / ours, ours_rss / theirs_rss
            print(f"ratio (fastest runs): kubetune is {speed:.1f}x faster, with {memory:.2f}x the peak memory")


if __name__ == "__main__":
    main()
