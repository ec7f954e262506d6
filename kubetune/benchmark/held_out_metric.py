"""lm-eval's ``process_results`` of the held-out log-likelihood task: copied beside its YAML (``!function``).

Bits per byte of the reference answer, given the prompt: lm-eval's ``bits_per_byte`` aggregation of
(log-likelihood, UTF-8 bytes) pairs, so answers of any length and tokenizers of any vocabulary compare.
Only the standard library: lm-eval imports this file by its path."""


def process_results(doc: dict, results: list) -> dict:
    loglikelihood, is_greedy = results[0]
    return {"bits_per_byte": (loglikelihood, len(doc["answer"].encode("utf-8"))), "acc": float(is_greedy)}
