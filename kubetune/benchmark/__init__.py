"""Benchmark evaluation with lm-evaluation-harness: the offline held-out tasks, the harness run, typed results."""
