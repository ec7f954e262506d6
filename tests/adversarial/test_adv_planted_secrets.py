"""Secrets planted in every shape never leave the user's hands.

Credentials are planted where a user legitimately keeps them (the environment of the run: S3 keys, tokens,
passwords) and the spec names them by reference only. A whole local pipeline run with an S3 export (a real
moto server over HTTP) must not write any of them into any file of the run folder, any exported object, or
its console output; ``kubetune run`` must not send any to the KFP API (a recording stand-in: no KFP API
server can run here). Planted as values in a spec instead, they are refused without being echoed and nothing
is sent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kubetune.cli import app

# One of every shape the scanner knows, each unique so that a hit names its shape.
PLANTED = {
    "HF_TOKEN": "hf_PlAnTeDhUgGiNgFaCeToKeN0123456789ab",
    "AWS_ACCESS_KEY_ID": "AKIAPLANTED0123456X",
    "AWS_SECRET_ACCESS_KEY": "pLaNtEd/SeCrEtAcCeSsKeY+0123456789abcdEF",
    "WANDB_API_KEY": "0123456789abcdef0123456789abcdefdeadbeef",
    "MLFLOW_TRACKING_PASSWORD": "planted-mlflow-password-7431",
    "MLFLOW_TRACKING_TOKEN": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJwbGFudGVkIn0.c2lnbmF0dXJlcGxhbnRlZA",
    "GITHUB_TOKEN": "ghp_PlantedGithubToken0123456789abcdefAB",
    "OPENAI_API_KEY": "sk-plantedOpenAiStyleKey0123456789",
    "MODEL_REGISTRY_TOKEN": "planted-registry-token-99812",
}
PEM = "-----BEGIN PRIVATE KEY-----\nMIIBVwIBADANBgkqhkiG9w0BAQEFAASCAUEwggE9AgEAAkEAplanted\n-----END PRIVATE KEY-----"

SPEC = {
    "algorithm": "lora_sft",
    "num_epochs": 1,
    "learning_rate": 0.005,
    "effective_batch_size": 8,
    "max_seq_len": 256,
    "lora_r": 8,
    "save_steps": 24,
    "eval_steps": 24,
    "seed": 42,
    "secrets": {
        "HF_TOKEN": {"env": "HF_TOKEN"},
        "WANDB_API_KEY": {"secret": "tracking", "key": "WANDB_API_KEY"},
        "MLFLOW_TRACKING_PASSWORD": {"env": "MLFLOW_TRACKING_PASSWORD"},
    },
}

# Every value shape, planted into a spec where a careless user might put it.
IN_SPEC = [
    {"hub_token": PLANTED["HF_TOKEN"]},
    {"report_to": [PLANTED["HF_TOKEN"]]},
    {"mlflow_tracking_uri": "https://:" + PLANTED["MLFLOW_TRACKING_PASSWORD"] + "@mlflow.example"},
    {"mlflow_tracking_uri": "https://user:" + PLANTED["MLFLOW_TRACKING_PASSWORD"] + "@mlflow.example"},
    {"wandb_project": PLANTED["WANDB_API_KEY"]},
    {"run_name": PLANTED["OPENAI_API_KEY"]},
    {"hub_model_id": PLANTED["GITHUB_TOKEN"]},
    {"mlflow_run_name": PLANTED["MLFLOW_TRACKING_TOKEN"]},
    {"wandb_entity": PLANTED["AWS_ACCESS_KEY_ID"]},
    {"backend": PLANTED["HF_TOKEN"]},
    {PLANTED["HF_TOKEN"]: 1},
    {"backend_kwargs": {"output_dir": PEM}},
    {"mlflow_tracking_uri": "https://mlflow.example/?access_token=" + PLANTED["MODEL_REGISTRY_TOKEN"]},
]


def _leaks(data: bytes) -> list[str]:
    values = {**PLANTED, "PEM": PEM.splitlines()[1]}
    return [name for name, value in values.items() if value.encode() in data]


def _scan_tree(root: Path) -> dict[str, list[str]]:
    found = {}
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink() and (leaks := _leaks(path.read_bytes())):
            found[str(path.relative_to(root))] = leaks
    return found


@pytest.mark.slow
def test_a_local_run_with_planted_credentials_writes_none_of_them_anywhere(tmp_path, s3, moto_endpoint):
    s3.create_bucket(Bucket="models")
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC, indent=2))
    env = {**os.environ, **PLANTED, "SSH_PRIVATE_KEY": PEM, "AWS_ENDPOINT_URL": moto_endpoint, "HF_HUB_OFFLINE": "1"}
    run = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "kubetune.cli", "run-local", "-o", str(run), "--kwargs", str(spec)]
        + ["--destination", "s3://models/planted/v1"],
        env=env,
        capture_output=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    assert "Traceback" not in done.stderr.decode()
    assert not _leaks(done.stdout + done.stderr)
    files = list(run.rglob("*"))
    assert any(p.name == "training_args.bin" for p in files) and any(p.name == "location.json" for p in files)
    assert _scan_tree(run) == {}
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="models")["Contents"]]
    assert "planted/v1/manifest.json" in keys
    leaked = {k: hits for k in keys if (hits := _leaks(s3.get_object(Bucket="models", Key=k)["Body"].read()))}
    assert leaked == {}


def test_kubetune_run_sends_references_never_values(tmp_path, kfp_server, monkeypatch):
    for name, value in PLANTED.items():
        monkeypatch.setenv(name, value)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC, indent=2))
    result = CliRunner().invoke(app, ["run", "--spec", str(spec), "-p", "data_uri=s3://data/chat.jsonl"])
    assert result.exit_code == 0, result.output
    assert not _leaks(result.output.encode())
    sent = json.dumps(kfp_server.requests, default=str).encode()
    assert b'"HF_TOKEN"' in sent and not _leaks(sent)  # the reference travels, the value does not


@pytest.mark.parametrize("planted", IN_SPEC, ids=lambda d: next(iter(d)) if len(next(iter(d))) < 30 else "secret-as-key")
def test_a_credential_in_a_spec_is_refused_unechoed_and_nothing_is_sent(tmp_path, kfp_server, planted):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({**SPEC, **planted}, indent=2))
    for command in (["validate", str(spec)], ["run", "--spec", str(spec)]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 2, (command, result.output)
        assert "Traceback" not in result.output and not _leaks(result.output.encode())
        assert "spec.json:" in result.output  # the problem is placed in the file
    assert kfp_server.requests == []


AS_PARAMETER = [PLANTED["HF_TOKEN"], PLANTED["MLFLOW_TRACKING_TOKEN"], "https://u:" + PLANTED["GITHUB_TOKEN"] + "@h"]


@pytest.mark.parametrize("planted", AS_PARAMETER)
def test_a_credential_as_a_run_parameter_is_refused_unechoed_and_nothing_is_sent(kfp_server, planted):
    result = CliRunner().invoke(app, ["run", "-p", f"model_uri={planted}", "-p", "data_uri=s3://d/x.jsonl"])
    assert result.exit_code == 2, result.output
    assert planted not in result.output and "Traceback" not in result.output
    assert kfp_server.requests == []
