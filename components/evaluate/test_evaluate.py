import math

import torch
from kubetune.components.evaluate.core import best, evaluate, held_out_loss
from transformers import AutoModelForCausalLM, AutoTokenizer

from kubetune.data.tokenize import read_jsonl, tokenize_samples
from kubetune.embedded.sample_data import SAMPLE_DATA


def test_loss_equals_the_models_own_masked_loss(tiny_model):
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    samples, _ = tokenize_samples(tokenizer, list(read_jsonl(SAMPLE_DATA))[:12])
    ours, tokens = held_out_loss(model, tokenizer, samples, batch_size=5)
    total, count = 0.0, 0
    with torch.no_grad():
        for s in samples:  # one at a time, no padding: transformers' own loss over labelled tokens
            n = sum(label != -100 for label in s["labels"][1:])
            out = model(input_ids=torch.tensor([s["input_ids"]]), labels=torch.tensor([s["labels"]]))
            total, count = total + out.loss.item() * n, count + n
    assert tokens == count and math.isclose(ours, total / count, rel_tol=1e-4)


def test_every_checkpoint_gets_a_point_and_the_best_is_lowest(tmp_path, tiny_model):
    import shutil

    for name in ("checkpoint-10", "checkpoint-2", "final"):
        shutil.copytree(tiny_model, tmp_path / "run" / name)
    val = tmp_path / "val.jsonl"
    val.write_text("".join(line for line, _ in zip(SAMPLE_DATA.open(), range(8), strict=False)))
    points = evaluate(tmp_path / "run", val)
    assert [p.checkpoint for p in points] == ["checkpoint-2", "checkpoint-10", "final"]
    assert all(math.isfinite(p.loss) and p.tokens > 0 for p in points)
    assert best(points).loss == min(p.loss for p in points)
