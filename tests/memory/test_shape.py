"""The model's shape from its config.json alone, wherever the model is: a file, a directory, s3:// (only
config.json is fetched), the embedded tiny model; unreachable -> the plan is skipped with a note, never a refusal."""

import http.server
import json
import tempfile
import threading
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


def test_a_file_that_is_not_json_is_refused(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(KubetuneError, match="config.json: cannot be read as JSON"):
        read_model_shape(str(tmp_path))


def test_a_gpt2_style_config_is_read_as_transformers_reads_it(tmp_path):
    config = {"model_type": "gpt2", "n_layer": 3, "n_embd": 64, "n_head": 4, "vocab_size": 300, "n_positions": 256}
    (tmp_path / "config.json").write_text(json.dumps(config))
    shape = read_model_shape(str(tmp_path))
    assert (shape.num_layers, shape.hidden_size, shape.vocab_size) == (3, 64, 300)


LLAMA = json.loads((CONFIGS / "llama-3.2-1b.json").read_text())


@pytest.mark.parametrize(
    ("changed", "note"),
    [
        ({"num_hidden_layers": 0}, "num_hidden_layers is 0, not a positive integer"),
        ({"num_hidden_layers": -3}, "num_hidden_layers is -3, not a positive integer"),
        ({"vocab_size": 0}, "vocab_size is 0, not a positive integer"),
        ({"num_hidden_layers": True}, "cannot read its config.json as model_type 'llama'"),
        ({"hidden_size": 2049}, "cannot read its config.json as model_type 'llama'"),  # not a multiple of the heads
        ({"model_type": "acme_custom"}, "cannot read its config.json as model_type 'acme_custom'"),
        ({"model_type": "t5"}, "cannot read its config.json as model_type 't5'"),
    ],
)
def test_a_config_that_cannot_be_planned_skips_the_plan_naming_why(tmp_path, changed, note):
    from kubetune.contract import TrainingSpec
    from kubetune.memory.verdict import plan_spec

    (tmp_path / "config.json").write_text(json.dumps(LLAMA | changed))
    verdict = plan_spec(TrainingSpec(algorithm="sft", backend="x", params={"max_seq_len": 512}), str(tmp_path), gpu_memory=1.0)
    assert verdict.plan is None and f"Skipped: {tmp_path}: " in verdict.markdown and note in verdict.markdown
    verdict.refuse()  # no plan, no verdict: the run goes on


def test_a_model_the_trace_cannot_run_skips_the_plan():
    from transformers import AutoConfig

    from kubetune.contract import TrainingSpec
    from kubetune.memory.shape import ModelShape
    from kubetune.memory.verdict import plan_spec

    text = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 256}  # fmt: skip
    gemma3 = AutoConfig.for_model("gemma3", text_config=text).to_dict()  # multimodal: a vision tower before the text
    assert ModelShape(gemma3, "gemma3").num_layers == 2  # its text config's layers
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "config.json").write_text(json.dumps(gemma3))
        verdict = plan_spec(TrainingSpec(algorithm="lora_sft", backend="x", params={"max_seq_len": 64}), folder, gpu_memory=1.0)
    assert verdict.plan is None and "model_type 'gemma3' cannot be traced here" in verdict.markdown


def _server(handler) -> tuple[http.server.HTTPServer, str]:
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}"


def test_a_hub_id_is_read_with_the_token_which_a_redirect_to_another_host_never_gets(monkeypatch):
    seen = []

    class Cdn(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(("cdn", self.path, self.headers.get("Authorization")))
            self.send_response(200)
            self.end_headers()
            self.wfile.write((CONFIGS / "llama-3.1-70b.json").read_bytes())

        def log_message(self, *args):
            pass

    cdn, cdn_url = _server(Cdn)

    class Hub(Cdn):
        def do_GET(self):
            seen.append(("hub", self.path, self.headers.get("Authorization")))
            self.send_response(302)
            self.send_header("Location", f"{cdn_url}/blob/config.json")
            self.end_headers()

    hub, hub_url = _server(Hub)
    monkeypatch.setenv("HF_ENDPOINT", hub_url)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token_value")
    try:
        assert read_model_shape("meta-llama/Llama-3.1-70B").num_layers == 80
    finally:
        hub.shutdown()
        cdn.shutdown()
    assert seen == [
        ("hub", "/meta-llama/Llama-3.1-70B/resolve/main/config.json", "Bearer hf_test_token_value"),
        ("cdn", "/blob/config.json", None),
    ]
