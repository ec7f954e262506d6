"""A mini-trainer callback that writes every validation loss to a file: mini-trainer 0.9 writes only the
``validation_frequency`` / ``min_samples_per_validation`` ones to its metrics file, never those of
``validate_at_epoch`` / ``validate_at_final``. Imported only by the training step (it imports mini-trainer).

mini-trainer carries callbacks to its torchrun children as source text: the class is self-contained."""

from mini_trainer.callbacks import TrainerCallback

VALIDATION_LOG_ENV = "KUBETUNE_VALIDATION_LOG"


class KubetuneValidationLog(TrainerCallback):
    """Appends ``{"step", "epoch", "total_samples_accumulated", "val_loss", ...}`` per validation (rank 0)."""

    def on_evaluate(self, context):
        import json
        import os

        path = os.environ.get("KUBETUNE_VALIDATION_LOG")
        if not path or os.environ.get("RANK", "0") != "0" or "val_loss" not in (context.val_metrics or {}):
            return
        row = {"step": context.step, "epoch": context.epoch, "total_samples_accumulated": context.total_samples}
        row.update({k: v for k, v in context.val_metrics.items() if isinstance(v, (int, float))})
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def on_train_end(self, context):
        """Overridden so that mini-trainer waits for the rows above before its process ends."""
