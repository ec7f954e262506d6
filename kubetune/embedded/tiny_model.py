"""Deterministic, offline generator of a tiny Llama-architecture causal LM and its tokenizer.

The tokenizer is a byte-level BPE trained on the bundled sample data, with a ChatML-style chat template
that carries ``{% generation %}`` markers (so assistant-only masks work in TRL and in our tokenization).
The model has random weights from a fixed seed: the same call always writes the same files.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from kubetune.embedded.sample_data import SAMPLE_DATA

CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{ '<|im_start|>assistant\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{{ '\n' }}"
    "{%- else -%}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def _corpus(data_path: Path) -> list[str]:
    texts = []
    for line in data_path.read_text(encoding="utf-8").splitlines():
        for message in json.loads(line)["messages"]:
            texts.append(f"{message['role']}\n{message['content']}")
    return texts


def build_tokenizer(vocab_size: int = 512, data_path: Path = SAMPLE_DATA):
    """Train a byte-level BPE tokenizer on the bundled data and wrap it for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(data_path), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        chat_template=CHAT_TEMPLATE,
        model_max_length=512,
    )


def build_model(vocab_size: int, seed: int = 0, hidden_size: int = 64, num_layers: int = 2):
    """A randomly initialised LlamaForCausalLM, identical for identical arguments."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def write_tiny_model(output_dir: str | Path, seed: int = 0) -> Path:
    """Write model and tokenizer to ``output_dir`` atomically (staged, then renamed into place)."""
    output_dir = Path(output_dir)
    if (output_dir / "config.json").exists():
        return output_dir
    tokenizer = build_tokenizer()
    model = build_model(len(tokenizer), seed=seed)
    model.config.eos_token_id = tokenizer.eos_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-", dir=output_dir.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if output_dir.exists():
            shutil.rmtree(output_dir)
        staging.rename(output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return output_dir


if __name__ == "__main__":
    import sys

    print(write_tiny_model(sys.argv[1] if len(sys.argv) > 1 else "tiny-llama"))
