"""Validation-loss evaluation: held-out loss on learned tokens for every checkpoint, the best one, overfitting.

Loss is the mean cross-entropy over tokens whose label is not -100 (the masking of training, from the
prepared validation set), summed over all tokens and divided once, computed without gradients over
length-sorted batches; bf16 on a GPU, float32 on CPU. Checkpoints come in the backends' layouts:
``hf_format/samples_N`` (instructlab-training, mini-trainer), ``checkpoint-N`` (TRL), ``final``, full models
or LoRA adapters (loaded on their base model, which is loaded once for all adapters).

A damaged checkpoint (``kubetune.checkpoints.problem``: truncated weights, a config that does not parse, an
empty directory, ...; or one that fails to load) is skipped with its reason in the report; the best is
chosen among the rest, and only when every checkpoint is damaged does the step fail.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

from kubetune.backends.metrics import BackendSeries, Point
from kubetune.backends.training_record import checkpoint_naming
from kubetune.checkpoints import Position, adapter_base, find_checkpoints, is_adapter, problem
from kubetune.data import tokenized_file
from kubetune.data.tokenize import IGNORE_INDEX, read_jsonl, tokenize_samples
from kubetune.errors import KubetuneError, Problem
from kubetune.files import write_text_atomic
from kubetune.runtime import resolve_model
from kubetune.steps.curve import BackendLosses, CurvePoint, LossCurve, LossPoint, SeriesPoint
from kubetune.steps.report import html_report
from kubetune.steps.timeline import overfitting_point, read_backend_metrics


@dataclass
class Skipped:
    checkpoint: str  # path relative to the training output
    reason: str

    def __str__(self) -> str:
        return f"skipped: {self.checkpoint}: {self.reason}"


class _Models:
    """Loads checkpoints for evaluation; adapters share one base model, loaded once."""

    def __init__(self, root: Path, base_model: str | None):
        import torch

        self.root, self.base_model = root, base_model
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        self._base = None

    def _base_path(self, adapter: Path) -> str:
        return adapter_base(adapter, self.root, self.base_model)

    def load(self, path: Path):
        from transformers import AutoModelForCausalLM

        if not is_adapter(path):
            return AutoModelForCausalLM.from_pretrained(str(path), dtype=self.dtype).to(self.device).eval()
        from peft import PeftModel

        if self._base is None:
            self._base = AutoModelForCausalLM.from_pretrained(self._base_path(path), dtype=self.dtype).to(self.device)
        try:
            return PeftModel.from_pretrained(self._base, str(path)).to(self.device).eval()
        except Exception:
            self._base = None  # a failed load may have left adapter layers in it: load it afresh next time
            raise

    def release(self, model) -> None:
        if hasattr(model, "unload"):  # take the adapter's layers out; the base stays for the next adapter
            self._base = model.unload()


def tokenizer_for(path: Path, models: _Models):
    from transformers import AutoTokenizer

    source = path if (path / "tokenizer_config.json").exists() else Path(models._base_path(path))
    return AutoTokenizer.from_pretrained(str(source))


def held_out_loss(model, samples: list[dict], pad_id: int = 0, batch_size: int = 8, device: str = "cpu") -> tuple[float, int]:
    """Mean loss over learned tokens of tokenized samples, and the number of tokens counted."""
    import torch
    import torch.nn.functional as F

    ordered = sorted(samples, key=lambda s: len(s["input_ids"]))
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(ordered), batch_size):
            batch = ordered[i : i + batch_size]
            width = max(len(s["input_ids"]) for s in batch)
            ids = torch.full((len(batch), width), pad_id)
            labels = torch.full((len(batch), width), IGNORE_INDEX)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, s in enumerate(batch):
                n = len(s["input_ids"])
                ids[row, :n] = torch.tensor(s["input_ids"])
                labels[row, :n] = torch.tensor(s["labels"])
                mask[row, :n] = 1
            ids, labels, mask = ids.to(device), labels.to(device), mask.to(device)
            logits = model(input_ids=ids, attention_mask=mask).logits
            shifted = labels[:, 1:]
            total += F.cross_entropy(
                logits[:, :-1].reshape(-1, logits.size(-1)).float(),
                shifted.reshape(-1),
                ignore_index=IGNORE_INDEX,
                reduction="sum",
            ).item()
            count += int((shifted != IGNORE_INDEX).sum())
    return (total / count if count else float("nan")), count


def evaluate(
    output_dir: str | Path,
    validation_path: str | Path,
    max_seq_len: int | None = None,
    base_model: str | None = None,
    batch_size: int | None = None,
    skipped: list[Skipped] | None = None,
) -> list[LossPoint]:
    """One loss point per complete checkpoint under ``output_dir``, in training order (unnamed ones last).

    Damaged checkpoints are left out and appended to ``skipped`` (when given) with the reason. Checkpoints are named
    as the backend that trained ``output_dir`` names them (its record; both built-in namings without one)."""
    root = Path(output_dir)
    position_of = checkpoint_naming(root)
    found = find_checkpoints(root, named=True, position_of=position_of)
    if not found:
        raise KubetuneError(
            [Problem(str(root), "holds no checkpoint (no config.json or adapter_config.json)")], "cannot evaluate"
        )
    left_out = [] if skipped is None else skipped
    checkpoints = []
    for path in found:
        if reason := problem(path):
            left_out.append(Skipped(str(path.relative_to(root)), reason))
        else:
            checkpoints.append(path)
    rows = list(read_jsonl(tokenized_file(validation_path)))
    if not rows:
        raise KubetuneError([Problem(str(validation_path), "holds no validation sample")], "cannot evaluate")
    if not checkpoints:
        raise _all_damaged(root, left_out)
    models = _Models(root, base_model)
    tokenizer = tokenizer_for(checkpoints[0], models)
    samples, _ = tokenize_samples(tokenizer, rows, max_seq_len)  # prepared rows pass through as they are
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    points = []
    for path in checkpoints:
        try:
            model = models.load(path)
        except (KubetuneError, MemoryError):
            raise
        except Exception as error:  # passed the file checks, still does not load: damaged in another way
            if type(error).__name__ == "OutOfMemoryError":
                raise
            left_out.append(Skipped(str(path.relative_to(root)), f"does not load ({_first_line(error)})"))
            continue
        loss, tokens = held_out_loss(model, samples, pad, batch_size or (32 if models.device == "cuda" else 8), models.device)
        models.release(model)
        step, seen = position_of(path) or Position()
        points.append(LossPoint(str(path.relative_to(root)), step, seen, loss, math.exp(min(loss, 50)), tokens))
    if not points:
        raise _all_damaged(root, left_out)
    return points


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:200]}" if text else type(error).__name__


def _all_damaged(root: Path, skipped: list[Skipped]) -> KubetuneError:
    reasons = "; ".join(f"{s.checkpoint}: {s.reason}" for s in skipped)
    return KubetuneError([Problem(str(root), f"holds no complete checkpoint ({reasons})")], "cannot evaluate")


def best(points: list[LossPoint]) -> LossPoint:
    finite = [p for p in points if math.isfinite(p.loss)]
    if not finite:
        raise KubetuneError([Problem("validation loss", "no checkpoint has a finite validation loss")], "cannot evaluate")
    return min(finite, key=lambda p: p.loss)


def curve(
    output_dir: str | Path, points: list[LossPoint], patience: int = 2, skipped: list[Skipped] | None = None
) -> LossCurve:
    """Our points with the backend's own series on one axis, the best checkpoint and the overfitting point;
    ``skipped``: the damaged checkpoints left out, each as ``skipped: <checkpoint>: <reason>``."""
    series = read_backend_metrics(output_dir)
    _place(points, series)
    axis = "samples" if all(p.samples is not None for p in points) else "step"
    over = overfitting_point([p.loss for p in points], [getattr(p, axis) for p in points], series, axis, patience)

    def on_axis(logged: list[Point]) -> list[SeriesPoint]:
        return [SeriesPoint(p.loss, p.step, p.samples, getattr(p, axis)) for p in logged]

    result = LossCurve(
        axis=axis,
        patience=patience,
        points=[CurvePoint(**asdict(p), x=getattr(p, axis)) for p in points],
        best=best(points),
        overfitting=points[over] if over is not None else None,
        backend=BackendLosses(series.backend, on_axis(series.train), on_axis(series.validation)),
        skipped=[str(s) for s in skipped or []],
    )
    return result.model_copy(update={"metrics": result.kfp_metrics()})


def _place(points: list[LossPoint], series: BackendSeries) -> None:
    """Fill in each point's missing step or samples from the backend's metrics; unnamed ones go at the end."""
    last_step = max((t.step for t in series.train if t.step is not None), default=None)
    last_samples = max((t.samples for t in series.train if t.samples is not None), default=None)
    for p in points:
        if p.step is None and p.samples is None:
            p.step, p.samples = last_step, last_samples
        elif p.step is None:
            p.step = series.step_at_samples(p.samples)
        elif p.samples is None:
            p.samples = series.samples_at_step(p.step)


def evaluate_step(
    trained_model: str | Path,
    validation_data: str | Path,
    curve_out: str | Path,
    report_out: str | Path,
    base_model_uri: str | None = None,
    patience: int = 2,
) -> LossCurve:
    """The pipeline's evaluation step: every checkpoint's loss, the curve as JSON and the HTML report."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="kubetune-base-") as workdir:
        base = resolve_model(base_model_uri, workdir) if base_model_uri else None
        skipped: list[Skipped] = []
        points = evaluate(trained_model, validation_data, base_model=base, skipped=skipped)
    for note in skipped:
        print(f"[kubetune] {note}", flush=True)
    result = curve(trained_model, points, patience, skipped)
    write_text_atomic(curve_out, result.to_json())
    write_text_atomic(report_out, html_report(result))
    return result
