import json
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from kubetune.errors import KubetuneError
from kubetune.steps.export import MANIFEST, export, export_step, verify
from tests.support.curves import write_loss_curve


@pytest.fixture(scope="module")
def adapter(tmp_path_factory, tiny_model):
    """A LoRA adapter on the tiny model, with non-zero weights so that merging changes the model."""
    from peft import LoraConfig, get_peft_model

    out = tmp_path_factory.mktemp("lora") / "checkpoint-4"
    torch.manual_seed(0)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model), LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)
    )
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(out)
    return out


def test_local_export_writes_manifest_last_and_verifies(tmp_path, tiny_model):
    result = export(tiny_model, tmp_path / "exported")
    assert result.kind == "full" and verify(tmp_path / "exported") == []
    manifest = json.loads((tmp_path / "exported" / MANIFEST).read_text())
    assert {"model.safetensors", "README.md", "tokenizer.json"} <= set(manifest["files"])
    (tmp_path / "exported" / "config.json").write_text("{}")
    assert verify(tmp_path / "exported") == ["config.json does not match its checksum"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind
    (tmp_path / "exported" / MANIFEST).unlink()
    assert "incomplete" in verify(tmp_path / "exported")[0]


def test_re_export_replaces_a_kubetune_export_and_refuses_foreign_files_without_overwrite(tmp_path, tiny_model):
    export(tiny_model, tmp_path / "exported")
    export(tiny_model, tmp_path / "exported")  # a kubetune export is replaced
    (tmp_path / "exported" / "stale.bin").write_text("not written by kubetune")
    assert verify(tmp_path / "exported") == ["stale.bin is not in the manifest"]
    with pytest.raises(KubetuneError, match=r"did not export \(stale.bin\).*pass overwrite"):
        export(tiny_model, tmp_path / "exported")
    assert (tmp_path / "exported" / "stale.bin").exists()
    export(tiny_model, tmp_path / "exported", overwrite=True)
    assert not (tmp_path / "exported" / "stale.bin").exists() and verify(tmp_path / "exported") == []


def test_unwritable_destination_fails_before_anything_moves(tmp_path, tiny_model):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(KubetuneError, match="model: cannot be created: .*/file is not a directory$"):
        export(tiny_model, blocker / "model")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_adapter_only_and_merged_exports(tmp_path, tiny_model, adapter):
    from peft import PeftModel

    alone = export(adapter, tmp_path / "adapter", merge=False)
    files = set(alone.manifest["files"])
    assert alone.kind == "adapter" and {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json"} <= files
    assert "model.safetensors" not in files

    # the adapter's recorded base path is another pod's: the merge takes the base model given here
    config = adapter / "adapter_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "base_model_name_or_path": "/train-pod/base"}))
    with pytest.raises(KubetuneError, match="base model '/train-pod/base' is not readable here"):
        export(adapter, tmp_path / "merged")
    merged = export(adapter, tmp_path / "merged", base_model=str(tiny_model))
    assert merged.kind == "merged" and "model.safetensors" in merged.manifest["files"]

    ids = torch.tensor([[1, 5, 9, 42, 7, 3]])
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")  # transformers alone
    with torch.no_grad():
        theirs = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), adapter)(ids).logits
        base = AutoModelForCausalLM.from_pretrained(tiny_model)(ids).logits
        ours = loaded(ids).logits
    assert torch.allclose(ours, theirs, atol=1e-4) and not torch.allclose(ours, base, atol=1e-3)


def test_s3_export_verifies_and_a_rerun_moves_no_bytes(tmp_path, tiny_model, s3):
    s3.create_bucket(Bucket="models")
    s3.put_object(Bucket="models", Key="chat/v1/stale.bin", Body=b"not written by kubetune")
    with pytest.raises(KubetuneError, match=r"s3://models/chat/v1: holds 1 file\(s\) .*\(stale.bin\)"):
        export(tiny_model, "s3://models/chat/v1")
    first = export(tiny_model, "s3://models/chat/v1", overwrite=True)
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="models")["Contents"]}
    assert keys == {f"chat/v1/{name}" for name in first.manifest["files"]} | {"chat/v1/manifest.json"}
    assert verify("s3://models/chat/v1") == [] and first.skipped_files == 0
    second = export(tiny_model, "s3://models/chat/v1")
    # nothing moves again (the model card carries the date: across midnight it alone is uploaded)
    assert second.skipped_files >= len(second.manifest["files"]) - 1
    s3.put_object(Bucket="models", Key="chat/v1/config.json", Body=b"{}")
    assert verify("s3://models/chat/v1") == ["s3://models/chat/v1/config.json does not match its checksum"]
    assert verify("s3://models/chat/other") == ["s3://models/chat/other/manifest.json is missing: the export is incomplete"]


def test_s3_export_survives_transient_faults(tmp_path, tiny_model, s3, faulty_proxy, monkeypatch):
    s3.create_bucket(Bucket="flaky")
    count = {"n": 0}

    def every_third_request_fails_or_drops(method, path):
        count["n"] += 1
        return {0: "fail", 1: "drop"}.get(count["n"] % 6) if count["n"] % 3 == 0 or count["n"] % 6 == 1 else None

    proxy = faulty_proxy(every_third_request_fails_or_drops)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    export(tiny_model, "s3://flaky/m")
    assert {o for _, _, o in proxy.requests} >= {"fail", "drop", "forward"}
    assert verify("s3://flaky/m") == []


def test_s3_export_that_cannot_finish_fails_clearly_and_leaves_no_manifest(tmp_path, tiny_model, s3, faulty_proxy, monkeypatch):
    s3.create_bucket(Bucket="broken")
    proxy = faulty_proxy(lambda method, path: "error" if method == "PUT" and "model.safetensors" in path else None)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "3")  # fewer retries with backoff: the same outcome, sooner
    failed = r"s3://broken/m: .*\(InternalError\) when calling the PutObject operation \(reached max retries"
    with pytest.raises(KubetuneError, match=failed):
        export(tiny_model, "s3://broken/m")
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.upstream.geturl())
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="broken").get("Contents", [])]
    assert "m/manifest.json" not in keys and not [k for k in keys if "/.kubetune-staging/" in k]
    assert "incomplete" in verify("s3://broken/m")[0]


def test_s3_missing_bucket_or_credentials_fail_before_any_bytes_move(tmp_path, tiny_model, s3, monkeypatch):
    with pytest.raises(KubetuneError, match="s3://nowhere: the bucket does not exist"):
        export(tiny_model, "s3://nowhere/model")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    for name in ("AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE"):
        monkeypatch.setenv(name, str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(KubetuneError, match="no S3 credentials found"):
        export(tiny_model, "s3://models/model")


def test_export_step_picks_best_or_final_and_writes_card_and_pointer(tmp_path, tiny_model, s3):
    run = tmp_path / "trained" / "checkpoints"
    for name in ("checkpoint-2", "checkpoint-4", "final"):
        shutil.copytree(tiny_model, run / name)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"algorithm": "lora_sft", "backend": "unsloth", "learning_rate": 0.005, "model_path": "tiny"}))
    curve = write_loss_curve(tmp_path / "curve.json", {f"checkpoints/checkpoint-{n}": 6 - n / 10 for n in (2, 4)})
    s3.create_bucket(Bucket="out")
    common = {
        "trained_model": tmp_path / "trained",
        "checkpoint": "checkpoints/checkpoint-4",
        "spec_path": spec,
        "curve_path": curve,
    }
    best = export_step(
        destination="s3://out/m", pointer_dir=tmp_path / "pointer", train_metadata={"samples": 9, "tokens": 99}, **common
    )
    assert best.checkpoint == "checkpoints/checkpoint-4" and verify("s3://out/m") == []
    card = s3.get_object(Bucket="out", Key="m/README.md")["Body"].read().decode()
    assert "best validation loss | 5.6000 at `checkpoints/checkpoint-4`" in card and "9 samples, 99 tokens" in card
    assert "| learning_rate | 0.005 |" in card and "lora_sft" in card
    assert json.loads((tmp_path / "pointer" / "location.json").read_text())["uri"] == "s3://out/m"
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="out")["Contents"]}
    assert {"m/kubetune-spec.json", "m/loss_curve.json"} <= keys
    final = export_step(destination=str(tmp_path / "final"), select="final", **common)
    assert final.checkpoint == "checkpoints/final" and verify(tmp_path / "final") == []
    with pytest.raises(KubetuneError, match='export_checkpoint: must be "best" or "final"'):
        export_step(destination=str(tmp_path / "x"), select="latest", **common)
