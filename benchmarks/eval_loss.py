"""Validation loss: our evaluation vs ``transformers.Trainer.evaluate``, same model and data, in one run.

The model is a randomly initialised Llama larger than the embedded one (so the forward pass, not Python,
is what is timed), with the embedded tokenizer; the data are generated multi-turn chats, prepared by our
preparation step. Both sides use the same batch size. Losses are shown side by side: ``Trainer.evaluate``
averages per-batch means, we average over every learned token, so the two agree exactly only when one
batch holds everything (checked first, on a subset).

    python benchmarks/eval_loss.py [--samples 400] [--batch-size 8] [--hidden 256] [--layers 4]
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=2, help="alternating runs per side; the fastest counts")
    args = parser.parse_args()

    import torch
    from data_prep import generate
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from kubetune.data.tokenize import read_jsonl
    from kubetune.embedded.tiny_model import build_model, build_tokenizer
    from kubetune.steps.evaluate import held_out_loss
    from kubetune.steps.prepare import prepare

    torch.set_num_threads(max(torch.get_num_threads(), 1))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tokenizer = build_tokenizer()
        model = build_model(len(tokenizer), hidden_size=args.hidden, num_layers=args.layers).eval()
        tokenizer.save_pretrained(tmp / "model")
        model.save_pretrained(tmp / "model")
        generate(tmp / "chat.jsonl", args.samples, tasks=(2, 5))
        prepare(str(tmp / "chat.jsonl"), str(tmp / "model"), tmp / "train", tmp / "val", validation_ratio=0, num_proc=1)
        samples = list(read_jsonl(tmp / "train" / "data.jsonl"))
        tokens = sum(s["num_loss_counted_tokens"] for s in samples)
        rows = [{"input_ids": s["input_ids"], "labels": s["labels"]} for s in samples]
        collator = DataCollatorForSeq2Seq(tokenizer, padding=True)

        def trainer(batch_size: int) -> Trainer:
            targs = TrainingArguments(
                output_dir=str(tmp / "t"), per_device_eval_batch_size=batch_size, use_cpu=True, report_to=[]
            )
            return Trainer(model=model, args=targs, data_collator=collator)

        subset = rows[:32]
        ours_subset, _ = held_out_loss(model, subset, tokenizer.pad_token_id, args.batch_size)
        theirs_subset = trainer(len(subset)).evaluate(subset)["eval_loss"]
        print(f"same loss check (one batch of {len(subset)}): ours {ours_subset:.6f}, Trainer.evaluate {theirs_subset:.6f}")
        assert math.isclose(ours_subset, theirs_subset, rel_tol=1e-4)

        print(f"model: Llama hidden {args.hidden} x {args.layers} layers; {len(samples)} samples, {tokens:,} learned tokens")
        best: dict[str, float] = {}
        for _ in range(args.repeat):
            start = time.perf_counter()
            ours, _ = held_out_loss(model, samples, tokenizer.pad_token_id, args.batch_size)
            best["kubetune"] = min(best.get("kubetune", math.inf), time.perf_counter() - start)
            start = time.perf_counter()
            theirs = trainer(args.batch_size).evaluate(rows)["eval_loss"]
            best["Trainer.evaluate"] = min(best.get("Trainer.evaluate", math.inf), time.perf_counter() - start)
        for name, loss in (("kubetune", ours), ("Trainer.evaluate", theirs)):
            print(f"{name:>18}: {best[name]:6.2f} s  {tokens / best[name]:10,.0f} learned tokens/s  loss {loss:.4f}")
        print(
            f"ratio (fastest runs): kubetune is {best['Trainer.evaluate'] / best['kubetune']:.2f}x the speed of Trainer.evaluate"
        )


if __name__ == "__main__":
    main()
