"""The model's shape from its config.json alone, wherever the model is: a file, a directory, s3:// (only
config.json is fetched), the embedded tiny model; unreachable -> the plan is skipped with a note, never a refusal."""

import json
from pathlib import Path

import pytest

from kubetune.errors import KubetuneError
from kubetune.memory import ShapeUnavailable, read_model_shape

CONFIGS = Path(__file__).parent / "configs"


def test_a_config_file_and_its_directory_give_the_same_shape(tmp_path):
    (tmp_path / "config.json").write_text((CONFIGS / "llama-3.1-8b.json").read_text())
    from_file, from_dir = read_model_shape(str(CONFIGS / "llama-3.1-8b.json")), read_model_shape(str(tmp_path))
    assert from_file.config == from_dir.config
    assert (from_dir.num_layers, from_dir.hidden_size, from_dir.vocab_size, from_dir.dtype) == (32, 4096, 128256, "bfloat16")


def test_an_s3_model_has_only_its_config_downloaded(s3):
    s3.create_bucket(Bucket="models")
    s3.put_object(Bucket="models", Key="llama/config.json", Body=(CONFIGS / "llama-3.2-1b.json").read_bytes())
    s3.put_object(Bucket="models", Key="llama/model.safetensors", Body=b"x" * 10)
    shape = read_model_shape("s3://models/llama")
    assert shape.num_layers == 16 and shape.config["tie_word_embeddings"] is True
    with pytest.raises(ShapeUnavailable, match=r"s3://models/nothing/config.json"):
        read_model_shape("s3://models/nothing")


def test_the_embedded_tiny_model_is_read_without_writing_it():
    shape = read_model_shape("kubetune://tiny-llama")
    assert (shape.num_layers, shape.hidden_size, shape.vocab_size) == (2, 64, 512)


def test_a_hub_id_that_cannot_be_reached_skips_the_plan_naming_the_host(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(ShapeUnavailable, match=r"meta-llama/Llama-3.1-8B: config.json not readable from http://127.0.0.1:9"):
        read_model_shape("meta-llama/Llama-3.1-8B")


def test_a_pvc_path_not_mounted_here_skips_the_plan():
    with pytest.raises(ShapeUnavailable, match="/mnt/models/granite: no config.json there"):
        read_model_shape("/mnt/models/granite")


def test_a_file_that_is_not_a_causal_lm_config_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 8}))
    with pytest.raises(KubetuneError, match="not a causal LM's config.json .no num_hidden_layers, vocab_size"):
        read_model_shape(str(tmp_path))


def test_a_hub_id_is_read_from_the_hub_endpoint_with_the_token(monkeypatch):
    import http.server
    import threading

    seen = {}

    class Hub(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen[self.path] = self.headers.get("Authorization")
            self.send_response(200)
            self.end_headers()
            self.wfile.write((CONFIGS / "llama-3.1-70b.json").read_bytes())

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setenv("HF_TOKEN", "hf_test_token_value")
    try:
        assert read_model_shape("meta-llama/Llama-3.1-70B").num_layers == 80
    finally:
        server.shutdown()
    assert seen == {"/meta-llama/Llama-3.1-70B/resolve/main/config.json": "Bearer hf_test_token_value"}


def test_a_model_type_transformers_does_not_know_skips_the_plan(tmp_path):
    from kubetune.contract import TrainingSpec
    from kubetune.memory.verdict import plan_spec

    config = json.loads((CONFIGS / "llama-3.2-1b.json").read_text()) | {"model_type": "acme_custom"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    verdict = plan_spec(TrainingSpec(algorithm="sft", backend="x", params={"max_seq_len": 512}), str(tmp_path), gpu_memory=1.0)
    assert verdict.plan is None and "Skipped: model_type 'acme_custom' is not one transformers" in verdict.markdown
    verdict.refuse()  # no plan, no verdict
