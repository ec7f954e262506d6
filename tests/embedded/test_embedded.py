import hashlib

from transformers import AutoModelForCausalLM, AutoTokenizer

from kubetune.embedded import sample_data
from kubetune.embedded.tiny_model import write_tiny_model


def test_shipped_sample_data_is_what_the_generator_writes(tmp_path):
    assert sample_data.write(tmp_path / "s.jsonl").read_bytes() == sample_data.SAMPLE_DATA.read_bytes()
    assert sum(1 for _ in sample_data.SAMPLE_DATA.open()) >= 300


def test_tiny_model_is_deterministic_and_loads_offline(tmp_path, tiny_model):
    again = write_tiny_model(tmp_path / "again")
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert hashlib.sha256((again / name).read_bytes()).digest() == hashlib.sha256((tiny_model / name).read_bytes()).digest()
    model = AutoModelForCausalLM.from_pretrained(again)
    tokenizer = AutoTokenizer.from_pretrained(again)
    assert model.config.model_type == "llama" and model.config.vocab_size == len(tokenizer)
    assert "{% generation %}" in tokenizer.chat_template
