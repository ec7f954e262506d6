"""Training data: records and their checks, sources, tokenization, and the prepared-data layout."""

from __future__ import annotations

from pathlib import Path

# A prepared dataset is a directory with these two files (see components/prepare).
DATA_FILE = "data.jsonl"  # input_ids, labels, len, num_loss_counted_tokens: what every backend reads
MESSAGES_FILE = "messages.jsonl"  # the same samples as normalized chat records


def tokenized_file(path: str | Path) -> Path:
    """The tokenized data of a prepared dataset directory, or ``path`` itself when it is a file."""
    path = Path(path)
    return path / DATA_FILE if path.is_dir() else path
