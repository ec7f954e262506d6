"""Hostile and careless specs: each is refused by `kubetune validate` with exit code 2 and the exact one-line
problem naming the field and file:line, and no suspected secret appears anywhere in what is printed.

The same document gets the same verdict from `kubetune validate` and from the pipeline's validation step
(fed through a real protobuf Struct, as KFP carries it), and `kubetune run` sends nothing that looks like a
credential.
"""

from __future__ import annotations

import json

import pytest
from google.protobuf import json_format, struct_pb2
from typer.testing import CliRunner

from kubetune.cli import app
from kubetune.errors import KubetuneError
from kubetune.secrets import HINT
from kubetune.steps.validate import validate_to_artifact

HF = "hf_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"
GHP = "ghp_" + "Zx9" * 12
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlMTIzNDU2"
AWS_ID = "AKIAIOSFODNN7EXAMPLF"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
WANDB = "0f1e2d3c4b5a69788796a5b4c3d2e1f001234567"
SK = "sk-proj-A1b2C3d4E5f6G7h8I9j0K1l2"
SLACK = "xoxb-123456789012-abcdefABCDEF"
PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAsecretpemmaterial\n-----END RSA PRIVATE KEY-----"
SECRET = f"; secrets are never accepted as values ({HINT})"
LORA = {"algorithm": "lora_sft"}
SFT = {"algorithm": "sft", "max_seq_len": 512, "effective_batch_size": 8, "learning_rate": 1e-5}
KNOWN = (
    "all, azure_ml, clearml, codecarbon, comet_ml, dagshub, dvclive, flyte, kubeflow, mlflow, neptune, none, "
    "swanlab, tensorboard, trackio, wandb"
)


def lines(document: dict) -> str:
    """One key per line: the key `k` of the top level is on line 2 + its index."""
    return json.dumps(document, indent=1)


# (case id, spec text, expected problem lines with {f} for the file, the secret that must not be printed)
CASES = [
    ("hf-token-in-report_to-list", lines({**LORA, "report_to": [HF]}),
     ["{f}:3: `report_to[0]`: looks like a credential (Hugging Face token)" + SECRET], HF),
    ("url-empty-user-password", lines({**LORA, "mlflow_tracking_uri": "https://:pw-Secret-77@mlflow.example"}),
     ["{f}:3: `mlflow_tracking_uri`: looks like a credential (URL with credentials)" + SECRET], "pw-Secret-77"),
    ("url-user-password", lines({**LORA, "mlflow_tracking_uri": "https://alice:hunter2hunter2@mlflow.example/x"}),
     ["{f}:3: `mlflow_tracking_uri`: looks like a credential (URL with credentials)" + SECRET], "hunter2hunter2"),
    ("url-user-only", lines({**LORA, "mlflow_tracking_uri": f"https://{GHP}@github.com/o/r"}),
     ["{f}:3: `mlflow_tracking_uri`: looks like a credential (GitHub token, URL with credentials)" + SECRET], GHP),
    ("url-access-token-param", lines({**LORA, "mlflow_tracking_uri": "https://mlflow.example/?access_token=tok-998877"}),
     ["{f}:3: `mlflow_tracking_uri`: looks like a credential (URL with a credential parameter)" + SECRET], "tok-998877"),
    ("url-presigned-s3", lines({**LORA, "tensorboard_log_dir": "https://b.s3.amazonaws.com/x?X-Amz-Signature=abcdef12"}),
     ["{f}:3: `tensorboard_log_dir`: looks like a credential (URL with a credential parameter)" + SECRET], "abcdef12"),
    ("wandb-key-under-wandb-name", lines({**LORA, "wandb_project": WANDB}),
     ["{f}:3: `wandb_project`: looks like a credential (W&B API key)" + SECRET], WANDB),
    ("token-as-backend-value", lines({**LORA, "backend": HF}),
     ["{f}:3: `backend`: looks like a credential (Hugging Face token)" + SECRET], HF),
    ("token-as-a-key", lines({**LORA, HF: 1}),
     ["{f}:3: `<redacted>`: is a key that looks like a credential (Hugging Face token)" + SECRET], HF),
    ("token-as-a-nested-key", lines({**LORA, "backend_kwargs": {"lr_scheduler_kwargs": {GHP: 2}}}),
     ["{f}:5: `backend_kwargs.lr_scheduler_kwargs.<redacted>`: is a key that looks like a credential (GitHub token)" + SECRET],
     GHP),
    ("credential-named-key", lines({**LORA, "backend_kwargs": {"hub_token": "plain-looking-value-1"}}),
     ["{f}:4: `backend_kwargs.hub_token`: is named like a credential and holds a value" + SECRET], "plain-looking-value-1"),
    ("password-key-deep-in-list", lines({**LORA, "lr_scheduler_kwargs": {"a": [{"password": "p4ssw0rd!"}]}}),
     ["{f}:6: `lr_scheduler_kwargs.a[0].password`: is named like a credential and holds a value" + SECRET], "p4ssw0rd!"),
    ("jwt-as-run-name", lines({**LORA, "mlflow_run_name": JWT}),
     ["{f}:3: `mlflow_run_name`: looks like a credential (JWT)" + SECRET], JWT),
    ("pem-block", lines({**LORA, "backend_kwargs": {"output_dir": PEM}}),
     ["{f}:4: `backend_kwargs.output_dir`: looks like a credential (PEM block)" + SECRET], "secretpemmaterial"),
    ("aws-access-key-id", lines({**LORA, "wandb_entity": AWS_ID}),
     ["{f}:3: `wandb_entity`: looks like a credential (AWS access key id)" + SECRET], AWS_ID),
    ("aws-secret-key-alone", lines({**LORA, "run_name": AWS_SECRET}),
     ["{f}:3: `run_name`: looks like a credential (AWS secret access key)" + SECRET], AWS_SECRET),
    ("openai-style-key", lines({**LORA, "hub_model_id": SK}),
     ["{f}:3: `hub_model_id`: looks like a credential (OpenAI-style key)" + SECRET], SK),
    ("slack-token", lines({**LORA, "wandb_run_name": SLACK}),
     ["{f}:3: `wandb_run_name`: looks like a credential (Slack token)" + SECRET], SLACK),
    ("value-instead-of-reference", lines({**LORA, "secrets": {"HF_TOKEN": HF}}),
     ["{f}:4: `secrets.HF_TOKEN`: looks like a credential (Hugging Face token)" + SECRET], HF),
    ("token-as-secrets-key", lines({**LORA, "secrets": {HF: {"env": "HF_TOKEN"}}}),
     ["{f}:4: `secrets.<redacted>`: is a key that looks like a credential (Hugging Face token)" + SECRET], HF),
    ("learning-rate-infinity", '{\n "algorithm": "lora_sft",\n "learning_rate": Infinity\n}',
     ["{f}:3: `learning_rate`: Infinity is not a finite number (JSON has no NaN or Infinity)"], None),
    ("backend-kwarg-nan", '{\n "algorithm": "lora_sft",\n "max_grad_norm": NaN\n}',
     ["{f}:3: `max_grad_norm`: NaN is not a finite number (JSON has no NaN or Infinity)"], None),
    ("minus-infinity-in-list", '{\n "algorithm": "lora_sft",\n "lr_scheduler_kwargs": {"x": [1, -Infinity]}\n}',
     ["{f}:3: `lr_scheduler_kwargs.x[1]`: -Infinity is not a finite number (JSON has no NaN or Infinity)"], None),
    ("overflowing-float", '{\n "algorithm": "lora_sft",\n "weight_decay": 1e999\n}',
     ["{f}:3: `weight_decay`: is too large to be a finite number"], None),
    ("seed-10-to-the-29", lines({**LORA, "seed": 10**29}),
     ["{f}:3: `seed`: is out of range: integers must fit in 64 bits"], None),
    ("seed-2-to-the-32", lines({**LORA, "seed": 2**32}),
     ["{f}:3: `seed`: Input should be less than or equal to 4294967295"], None),
    ("negative-seed", lines({**SFT, "seed": -1}),
     ["{f}:6: `seed`: Input should be greater than or equal to 0"], None),
    ("negative-data-seed", lines({**LORA, "data_seed": -5}),
     ["{f}:3: `data_seed`: must be in [0, 4294967295]"], None),
    ("negative-eval-batch", lines({**LORA, "per_device_eval_batch_size": -1}),
     ["{f}:3: `per_device_eval_batch_size`: must be >= 1"], None),
    ("zero-eval-batch-nested", lines({**LORA, "backend_kwargs": {"per_device_eval_batch_size": 0}}),
     ["{f}:4: `per_device_eval_batch_size`: must be >= 1"], None),
    ("negative-workers", lines({**LORA, "dataloader_num_workers": -2}),
     ["{f}:3: `dataloader_num_workers`: must be >= 0"], None),
    ("beta-out-of-range", lines({**LORA, "adam_beta2": 1.5}),
     ["{f}:3: `adam_beta2`: must be in [0, 1)"], None),
    ("mini-trainer-zero-validation-frequency",
     lines({"algorithm": "osft", "effective_batch_size": 8, "max_tokens_per_gpu": 512, "max_seq_len": 256,
            "learning_rate": 1e-5, "unfreeze_rank_ratio": 0.3, "validation_frequency": 0}),
     ["{f}:8: `validation_frequency`: must be >= 1"], None),
    ("report_to-unknown-item", lines({**LORA, "report_to": ["wandb", "slack"]}),
     ["{f}:3: `report_to[1]`: is not a known integration; known: " + KNOWN], None),
    ("report_to-unknown-string", lines({**LORA, "report_to": "tensorbord"}),
     ["{f}:3: `report_to`: is not a known integration; known: " + KNOWN], None),
    ("duplicate-top-level-key", '{\n "algorithm": "lora_sft",\n "seed": 1,\n "lora_r": 8,\n "seed": 2\n}',
     ["{f}:3 and :5: `seed`: is given twice (JSON keeps only the last)"], None),
    ("duplicate-nested-key", '{\n "algorithm": "lora_sft",\n "backend_kwargs": {\n  "optim": "adamw_torch",\n'
     '  "optim": "sgd"\n }\n}', ["{f}:4 and :5: `backend_kwargs.optim`: is given twice (JSON keeps only the last)"], None),
    ("duplicate-escaped-key", '{\n "algorithm": "lora_sft",\n "seed": 1,\n "se\\u0065d": 2\n}',
     ["{f}:3 and :4: `seed`: is given twice (JSON keeps only the last)"], None),
    ("deep-nesting", '{"algorithm": "lora_sft", "lr_scheduler_kwargs": ' + "[" * 100_000 + "]" * 100_000 + "}",
     ["{f}:1: is nested deeper than 32 levels"], None),
    ("too-many-items", '{"algorithm": "lora_sft",\n"target_modules": [' + ",".join(['"q"'] * 20_000) + "]}",
     ["{f}:2: `target_modules`: has more than 10000 items; a spec's objects and lists hold at most 10000"], None),
    ("fifty-digit-number", '{\n "algorithm": "lora_sft",\n "max_steps": ' + "9" * 50 + "\n}",
     ["{f}:3: `max_steps`: is a number of 50 characters (at most 40)"], None),
    ("backend-config-refuses", lines({**SFT, "fsdp_options": {"cpu_offload_params": "maybe"}}),
     ["{f}:7: `fsdp_options.cpu_offload_params`: is refused by instructlab-training's configuration: "
      "Input should be a valid boolean, unable to interpret input"], None),
    ("not-an-object", "[1, 2]", ["{f}: `spec`: must be a JSON object"], None),
    # near the size limit, shaped to make a regex or a parser go quadratic or keep state per character
    ("unterminated-escapes", '{"a": ' + '"\\' * 400_000 + "}", ["{f}:1:800006: is not valid JSON: Invalid \\escape"], None),
    ("megabyte-string-value", json.dumps({**LORA, "x": "a://b?" * 170_000}),
     ["{f}:1: `x`: is not a parameter of lora_sft nor a field of unsloth's configuration"], None),
    ("megabyte-of-escaped-quotes", json.dumps({**LORA, "x": '\\"' * 200_000}),
     ["{f}:1: `x`: is not a parameter of lora_sft nor a field of unsloth's configuration"], None),
]  # fmt: skip


def validate(path) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["validate", "--pipeline", str(path)])
    return result.exit_code, result.output  # stdout and stderr together


@pytest.mark.parametrize(("text", "expected", "secret"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_spec_is_one_exact_problem_per_line_and_never_echoes(tmp_path, text, expected, secret):
    path = tmp_path / "spec.json"
    path.write_text(text, encoding="utf-8")
    code, output = validate(path)
    assert code == 2, output
    want = [e.replace("{f}", str(path)) for e in expected]
    assert output.splitlines()[1:] == [f"  - {w}" for w in want], output
    assert output.splitlines()[0] == f"invalid spec {path}: {len(want)} problem(s)"
    assert "Traceback" not in output
    if secret:
        assert secret not in output


def test_oversized_spec_is_refused_unread(tmp_path):
    path = tmp_path / "spec.json"
    with open(path, "w") as f:  # 50 MB that would be valid JSON
        f.write('{"algorithm": "lora_sft", "x": "')
        f.write("a" * 50_000_000)
        f.write('"}')
    code, output = validate(path)
    assert code == 2
    assert output.splitlines()[1] == f"  - {path}: is larger than 1048576 bytes (1 MiB), the size limit of a spec"


def test_invalid_utf8_names_the_line(tmp_path):
    path = tmp_path / "spec.json"
    path.write_bytes(b'{\n "algorithm": "lora_sft",\n "run_name": "\xff\xfe"\n}')
    code, output = validate(path)
    assert code == 2
    assert output.splitlines()[1] == f"  - {path}:3: is not UTF-8 text (byte 42)"


NORMAL = [
    {"model_path": "ibm-granite/granite-3.3-8b-instruct"},
    {"revision": "0123456789abcdef0123456789abcdef01234567"},
    {"pad_token": "<|pad|>", "eos_token": "<|end_of_text|>"},
    {"output_dir": "/mnt/output/Llama3Instruct/checkpoints"},
    {"mlflow_tracking_uri": "http://mlflow.mlflow.svc:5000", "mlflow_experiment_name": "exp-2025"},
    {"hub_model_id": "my-org/granite-lora-v2", "run_name": "lora-r8-lr2e-4"},
    {"report_to": ["wandb", "mlflow"], "wandb_project": "demo"},
    {"data_seed": 0, "seed": 4294967295, "per_device_eval_batch_size": 1},
    {"num_epochs": 2.0, "warmup_steps": 0},
    {"output_dir": "/mnt/out/caf%C3%A9%20runs/r%2B1", "run_name": "训练-第二版"},  # encoded or unicode: no secret
    {"wandb_project": "ｄｅｍｏ－ｐｒｏｊｅｃｔ", "run_name": "Grüße\u200b-run"},
]


@pytest.mark.parametrize("extra", NORMAL)
def test_normal_values_are_not_mistaken_for_secrets(tmp_path, extra):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({**LORA, **extra}))
    code, output = validate(path)
    assert code == 0, output


def _through_kfp(document: dict) -> dict:
    """The document as the pipeline's step receives it: a protobuf Struct, every number a double."""
    struct = struct_pb2.Struct()
    struct.update(document)
    return json_format.MessageToDict(struct)


SAME_VERDICT = [
    {**SFT, "num_epochs": 2.0},
    {**SFT, "num_epochs": 2},
    {**SFT, "num_epochs": 2.5},
    {**LORA, "per_device_eval_batch_size": -1},
    {**LORA, "seed": 2**32},
    {**LORA, "lora_r": 8, "save_steps": 10.0, "learning_rate": 1},
    {**LORA, "report_to": ["wandb"]},
    {**LORA, "report_to": [HF]},
]


@pytest.mark.parametrize("document", SAME_VERDICT)
def test_cli_and_pipeline_step_give_one_verdict(tmp_path, document):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(document))
    code, _ = validate(path)
    try:
        step = validate_to_artifact(document["algorithm"], _through_kfp(document), tmp_path / "artifact.json")
    except KubetuneError:
        step = None
    assert (code == 0) == (step is not None)
    if step is not None:
        cli = json.loads(CliRunner().invoke(app, ["validate", "--pipeline", str(path)]).stdout)
        assert cli == step.to_document()


@pytest.mark.parametrize(
    ("args", "secret"),
    [
        (["-p", "model_uri=https://alice:pw-Secret-77@models.example/m"], "pw-Secret-77"),
        (["-p", f"data_uri=s3://bucket/data?token={HF}"], HF),
        (["-p", f"{HF}=1"], HF),
        (["-p", json.dumps({"x": 1}) + "=" + GHP], GHP),
        (["-p", "training_kwargs=" + json.dumps({"hub_token": "abcdef123"}), "-p", "algorithm=lora_sft"], "abcdef123"),
        (["-p", f"notapair{HF}"], HF),
    ],
)
def test_run_sends_no_credential_and_does_not_echo_it(args, secret):
    result = CliRunner().invoke(app, ["run", "finetune", *args, "--host", "http://127.0.0.1:9"])
    output = result.output
    assert result.exit_code == 2, output
    assert output.startswith("invalid parameters: 1 problem(s)")
    assert secret not in output and "Traceback" not in output


def test_run_with_a_secret_in_the_spec_stops_before_the_cluster(tmp_path):
    path = tmp_path / "spec.json"
    path.write_text(lines({**LORA, "report_to": [HF]}))
    result = CliRunner().invoke(app, ["run", "finetune", "--spec", str(path), "--host", "http://127.0.0.1:9"])
    output = result.output
    assert result.exit_code == 2
    assert f"  - {path}:3: `report_to[0]`: looks like a credential (Hugging Face token)" in output
    assert HF not in output


# Round 2: specs that validated but that the backend refused later (at training, on a GPU)
OSFT = {"algorithm": "osft", "effective_batch_size": 8, "max_tokens_per_gpu": 512, "max_seq_len": 256,
        "learning_rate": 1e-5, "unfreeze_rank_ratio": 0.3}  # fmt: skip
SCHEDULERS = (
    "linear, cosine, cosine_with_restarts, polynomial, constant, constant_with_warmup, inverse_sqrt, "
    "reduce_lr_on_plateau, cosine_with_min_lr, cosine_warmup_with_min_lr, warmup_stable_decay, greedy"
)
LATE_CASES = [
    ("lora-scheduler-unknown", '{"algorithm":"lora_sft","lr_scheduler":"bogus"}',
     ["{f}:1: `lr_scheduler`: must be one of " + ", ".join(json.dumps(s) for s in SCHEDULERS.split(", "))]),
    ("lora-scheduler-backend-spelling", lines({**LORA, "optim": "adamw_torch", "lr_scheduler_type": "bogus"}),
     ["{f}:4: `lr_scheduler`: must be one of " + ", ".join(json.dumps(s) for s in SCHEDULERS.split(", "))]),
    ("lora-sftconfig-cross-field-refusal",
     lines({**LORA, "load_best_model_at_end": True, "eval_strategy": "steps", "save_strategy": "epoch", "eval_steps": 5}),
     ["{f}:3: `load_best_model_at_end`: is refused by unsloth's configuration: --load_best_model_at_end requires the "
      'save and eval strategy to match, except when --save_strategy="best", but found']),
    ("lora-compute-dtype-unknown", lines({**LORA, "load_in_4bit": True, "bnb_4bit_compute_dtype": "floaty"}),
     ["{f}:4: `bnb_4bit_compute_dtype`: Input should be 'bfloat16', 'float16', 'half', 'float32', 'float', "
      "'float64' or 'double'"]),
    ("lora-fsdp-unknown-word", lines({**LORA, "fsdp": "full_shard bogus"}),
     ["{f}:3: `fsdp`: holds an option word that is not known; known (space-separated): full_shard, shard_grad_op, "
      "no_shard, hybrid_shard, hybrid_shard_zero2, offload, auto_wrap"]),
    ("osft-scheduler-unknown", lines({**OSFT, "lr_scheduler": "bogus"}),
     ["{f}:8: `lr_scheduler`: must be one of " + SCHEDULERS]),
    ("osft-dtypes-unknown", lines({**OSFT, "train_dtype": "floaty", "save_dtype": "floaty"}),
     ["{f}:8: `train_dtype`: must be one of bfloat16, float16, float32, float64",
      "{f}:9: `save_dtype`: must be one of bfloat16, double, float, float16, float32, float64, half"]),
    ("osft-scheduler-kwargs-not-plain", lines({**OSFT, "lr_scheduler_kwargs": {"T_max": [1], "eta_min": 0.1}}),
     ["{f}:9: `lr_scheduler_kwargs.T_max`: must be a number, a string or a boolean"]),
    ("node-rank-beyond-nnodes", lines({**LORA, "nnodes": 2, "node_rank": 5}),
     ["{f}:4: `node_rank`: must be less than nnodes (2): ranks are 0..nnodes-1"]),
    ("empty-paths", lines({**LORA, "model_path": "", "data_path": " \t", "data_output_dir": ""}),
     ["{f}:3: `model_path`: is empty: give a path", "{f}:4: `data_path`: is empty: give a path",
      "{f}:5: `data_output_dir`: is empty: give a path"]),
    ("sft-chat-template-override", lines({**SFT, "chat_tmpl_path": "/nonexistent.py", "use_legacy_tmpl": True}),
     [f"{{f}}:{n}: `{k}`: cannot be set in a spec: kubetune tokenizes the data with the model's own chat template; "
      "another template at training time would not match it" for n, k in ((6, "chat_tmpl_path"), (7, "use_legacy_tmpl"))]),
    ("key-three-times-and-other-problems",
     '{"algorithm": "lora_sft",\n"seed": 1, "lora_r": 0,\n"seed": 2,\n"x_bogus": 1,\n"seed": 3}',
     ["{f}:2, :3 and :5: `seed`: is given 3 times (JSON keeps only the last)",
      "{f}:4: `x_bogus`: is not a parameter of lora_sft nor a field of unsloth's configuration",
      "{f}:2: `lora_r`: Input should be greater than 0"]),
    ("key-three-times-on-one-line", '{"algorithm": "lora_sft", "seed": 1, "seed": 2, "seed": 3}',
     ["{f}:1: `seed`: is given 3 times (JSON keeps only the last)"]),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in LATE_CASES], ids=[c[0] for c in LATE_CASES])
def test_what_the_backend_would_refuse_late_is_refused_by_validate(tmp_path, text, expected):
    path = tmp_path / "spec.json"
    path.write_text(text, encoding="utf-8")
    code, output = validate(path)
    assert code == 2, output
    want = [e.replace("{f}", str(path)) for e in expected]
    assert output.splitlines() == [f"invalid spec {path}: {len(want)} problem(s)", *(f"  - {w}" for w in want)]
    assert "bogus" not in output.replace("x_bogus", "") and "floaty" not in output  # values are never echoed
    assert [p.name for p in tmp_path.iterdir()] == ["spec.json"]  # nothing written
