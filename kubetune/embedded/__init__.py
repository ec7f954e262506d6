"""The embedded default: a tiny generated model and tokenizer plus bundled sample data, all offline."""
