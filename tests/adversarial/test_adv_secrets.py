"""Property tests of the secret scanner and the spec validator (hypothesis).

(a) A secret of every shape, planted at any depth as a value, a list item or a key, is found, and the
    report never shows it. (b) The validator raises nothing but KubetuneError on any JSON-like document
    or any file content. (c) An accepted spec round-trips: validate(to_document(validate(x))) == validate(x).
"""

from __future__ import annotations

import base64
import json
import math
import os
import random
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from kubetune.contract.catalog import load_snapshot
from kubetune.errors import KubetuneError
from kubetune.secrets import HINT, redact, scan_text
from kubetune.validation import load_spec, validate_spec

EXAMPLES = int(os.environ.get("ADV_EXAMPLES", "60"))  # more for a long local run: ADV_EXAMPLES=1000
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
B64URL = ALNUM + "-_"


def _text(alphabet: str, n: int, most: int | None = None) -> st.SearchStrategy[str]:
    return st.text(alphabet, min_size=n, max_size=most or n)


def _aws_secret(seed: int) -> str:
    """A secret key as AWS issues them (30 random bytes in base64) that is unambiguous alone, as documented:
    mixed case, digits, 22+ different characters, not shaped like a path."""
    rnd = random.Random(seed)
    while True:
        token = base64.b64encode(rnd.randbytes(30)).decode()
        mixed = all(any(f(c) for c in token) for f in (str.isupper, str.islower, str.isdigit))
        path_like = token.count("/") >= 3 or (token.startswith("/") and token.count("/") > 1)
        if mixed and len(set(token)) >= 22 and not path_like:
            return token


# every shape the scanner knows, as a strategy of realistic values (shrinking keeps the shape)
SHAPES: dict[str, st.SearchStrategy[str]] = {
    "Hugging Face token": _text(ALNUM, 34).map(lambda s: "hf_" + s),
    "GitHub token": st.one_of(
        _text(ALNUM, 36).map(lambda s: "ghp_" + s),
        _text(ALNUM, 36).map(lambda s: "gho_" + s),
        _text(ALNUM + "_", 60).map(lambda s: "github_pat_" + s),
    ),
    "GitLab token": _text(ALNUM, 20).map(lambda s: "glpat-" + s),
    "Slack token": _text(ALNUM + "-", 10, 40).map(lambda s: "xoxb-" + s),
    "npm token": _text(ALNUM, 36).map(lambda s: "npm_" + s),
    "Stripe key": _text(ALNUM, 24).map(lambda s: "sk_live_" + s),
    "Google API key": _text(ALNUM + "_-", 35).map(lambda s: "AIza" + s),
    "OpenAI-style key": _text(ALNUM, 18, 48).map(lambda s: "sk-" + s + "Q7"),
    "Anthropic key": _text(ALNUM + "-_", 20, 60).map(lambda s: "sk-ant-api03-" + s),
    "SendGrid key": st.tuples(_text(ALNUM, 22), _text(ALNUM, 43)).map(lambda p: f"SG.{p[0]}.{p[1]}"),
    "DigitalOcean token": _text("0123456789abcdef", 64).map(lambda s: "dop_v1_" + s),
    "AWS access key id": st.tuples(st.sampled_from(["AKIA", "ASIA"]), _text(UPPER, 16)).map("".join),
    "AWS secret access key": st.integers(0, 2**32).map(_aws_secret),
    "JWT": st.tuples(_text(B64URL, 10, 40), _text(B64URL, 10, 60), _text(B64URL, 10, 43)).map(
        lambda p: f"eyJ{p[0]}.eyJ{p[1]}.{p[2]}"
    ),
    "PEM block": _text(ALNUM + "+/", 40, 80).map(lambda s: f"-----BEGIN PRIVATE KEY-----\n{s}\n-----END PRIVATE KEY-----"),
    "bearer token": _text(ALNUM, 20, 40).map(lambda s: f"Bearer 9{s}"),
    "URL with credentials": st.tuples(
        _text(ALNUM, 0, 8), _text(ALNUM + "!$", 8, 20), st.sampled_from(["https", "s3", "http"])
    ).map(lambda p: f"{p[2]}://{p[0]}:{p[1]}@host.example/path"),
    "URL with a credential parameter": st.tuples(
        st.sampled_from(["access_token", "token", "sig", "X-Amz-Signature", "api_key", "signature"]), _text(ALNUM, 8, 30)
    ).map(lambda p: f"https://host.example/x?a=1&{p[0]}={p[1]}"),
}
CONTEXT_SHAPES = {"W&B API key": _text("0123456789abcdef", 40)}  # a W&B key counts next to a name saying so

SAFE_KEYS = st.sampled_from(["a", "b", "items", "cfg", "lr", "name", "x_y"])
SAFE_LEAVES = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), _text("abc xyz-", 0, 8))


def _filler(leaves: st.SearchStrategy) -> st.SearchStrategy:
    return st.recursive(
        leaves, lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(SAFE_KEYS, c, max_size=3)), max_leaves=8
    )


@st.composite
def planted(draw, secret_strategy: st.SearchStrategy[str], key_name: str | None = None):
    """A spec with ``secret`` somewhere in ``lr_scheduler_kwargs``: as a value, a list item or a key."""
    secret = draw(secret_strategy)
    depth = draw(st.integers(0, 6))
    how = draw(st.sampled_from(["value", "item", "key"] if key_name is None else ["value", "item"]))
    if how == "value":
        node: object = {key_name or draw(SAFE_KEYS): secret}
    elif how == "item":
        node = {key_name or draw(SAFE_KEYS): [draw(SAFE_LEAVES), secret]}
    else:
        node = {secret: draw(SAFE_LEAVES)}
    for _ in range(depth):
        wrap = draw(st.sampled_from(["dict", "list"]))
        node = {draw(SAFE_KEYS): node, "n": draw(_filler(SAFE_LEAVES))} if wrap == "dict" else [draw(SAFE_LEAVES), node]
    return secret, {"algorithm": "lora_sft", "lr_scheduler_kwargs": {"root": node}}


def _refused_without_echo(secret: str, document: dict) -> None:
    with pytest.raises(KubetuneError) as info:
        validate_spec(document, require_paths=False)
    report = info.value.report()
    assert "credential" in report
    assert secret not in report


@pytest.mark.parametrize("shape", sorted(SHAPES))
@SETTINGS
@given(data=st.data())
def test_planted_secret_of_every_shape_is_found_and_never_shown(shape, data):
    secret, document = data.draw(planted(SHAPES[shape]))
    assert shape in scan_text(secret)
    assert secret not in redact(f"before {secret} after")
    _refused_without_echo(secret, document)


@SETTINGS
@given(data=st.data(), key=st.sampled_from(["wandb_api_key_value", "wandb", "api_key_hint", "WANDB_KEY"]))
def test_wandb_key_next_to_a_name_saying_so_is_found(data, key):
    secret, document = data.draw(planted(CONTEXT_SHAPES["W&B API key"], key_name=key))
    assert "W&B API key" in scan_text(f"{key}={secret}")
    _refused_without_echo(secret, document)


JSON_LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20)
)
JSON = st.recursive(
    JSON_LEAVES, lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(st.text(max_size=10), c, max_size=4)), max_leaves=20
)
FIELDS = sorted(
    {*load_snapshot("trl").fields, *load_snapshot("mini-trainer").fields, *load_snapshot("instructlab-training").fields}
)


@st.composite
def spec_like(draw):
    """A document near a real spec: a real algorithm, real field names, arbitrary JSON values."""
    document = draw(st.dictionaries(st.sampled_from([*FIELDS, "secrets", "backend_kwargs", "backend"]), JSON, max_size=6))
    if draw(st.booleans()):
        document["algorithm"] = draw(st.sampled_from(["sft", "osft", "lora_sft"]))
    return document


@settings(max_examples=EXAMPLES * 3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=st.one_of(JSON, spec_like()), require_paths=st.booleans())
def test_validator_raises_only_kubetune_errors(document, require_paths):
    try:
        validate_spec(document, require_paths=require_paths)
    except KubetuneError as error:
        assert error.problems and all("\n" not in str(p) for p in error.problems if "PEM" not in str(p))


@settings(max_examples=EXAMPLES, deadline=None)
@given(content=st.one_of(st.binary(max_size=200), JSON.map(lambda d: json.dumps(d, allow_nan=True))))
def test_any_file_content_ends_in_a_kubetune_error_or_a_spec(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("spec") / "spec.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    try:
        load_spec(path, require_paths=False)
    except KubetuneError as error:
        assert str(path) in error.report()


POSITIVE = st.integers(1, 10_000)


@st.composite
def accepted(draw):
    algorithm = draw(st.sampled_from(["sft", "osft", "lora_sft"]))
    document: dict = {"algorithm": algorithm}
    if algorithm != "lora_sft":
        seq = draw(st.integers(16, 4096))
        document |= {"max_seq_len": seq, "effective_batch_size": draw(POSITIVE), "learning_rate": draw(st.floats(1e-7, 1.0))}
        document["max_tokens_per_gpu"] = seq + draw(st.integers(0, 4096))
    if algorithm == "osft":
        document["unfreeze_rank_ratio"] = draw(st.floats(0.01, 1.0))
    optional = {
        "num_epochs": st.one_of(POSITIVE, POSITIVE.map(float)),
        "seed": st.integers(0, 2**32 - 1),
        "warmup_steps": st.integers(0, 100),
        "wandb_project": _text("abcdef-", 1, 10),
        "mlflow_tracking_uri": st.just("http://mlflow.example:5000"),
        "backend": st.just({"sft": "instructlab-training", "osft": "mini-trainer", "lora_sft": "peft"}[algorithm]),
        "secrets": st.just({"HF_TOKEN": {"env": "HF_TOKEN"}, "WANDB_API_KEY": {"secret": "wandb", "key": "api-key"}}),
    }
    if algorithm == "lora_sft":
        optional |= {"lora_r": POSITIVE, "lora_dropout": st.floats(0, 0.99), "target_modules": st.lists(_text("qkvo_proj", 1, 8))}
    if algorithm == "osft":
        optional |= {"validation_split": st.floats(0.01, 0.5), "validation_frequency": POSITIVE, "osft": st.just(True)}
    for name in draw(st.lists(st.sampled_from(sorted(optional)), unique=True)):
        document[name] = draw(optional[name])
    return document


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=accepted())
def test_accepted_specs_round_trip(document):
    try:
        first = validate_spec(document, require_paths=False)
    except KubetuneError:
        assume(False)
        return
    again = validate_spec(first.to_document(), require_paths=False)
    assert again == first
    assert all(not isinstance(v, float) or math.isfinite(v) for v in first.params.values())
    assert not scan_text(first.to_json())  # what the validation step writes


# -- round 2: disguised secrets (percent-encoded, look-alike characters, zero-width characters) -------------


def _full_width(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


DISGUISES = {
    "percent-encoded": lambda s, _: quote(s, safe=""),
    "percent-encoded twice": lambda s, _: quote(quote(s, safe=""), safe=""),
    "percent-encoded 3 times": lambda s, _: quote(quote(quote(s, safe=""), safe=""), safe=""),
    "full-width": lambda s, _: _full_width(s),
    "zero-width space": lambda s, at: s[:at] + "\u200b" + s[at:],
    "zero-width joiner and full-width": lambda s, at: _full_width(s[:at]) + "\u200d" + s[at:],
    "full-width, then percent-encoded": lambda s, _: quote(_full_width(s), safe=""),
}


@pytest.mark.parametrize("disguise", DISGUISES)
@pytest.mark.parametrize("shape", sorted(SHAPES))
@SETTINGS
@given(data=st.data())
def test_a_disguised_secret_of_every_shape_is_found_and_never_shown(shape, disguise, data):
    secret = data.draw(SHAPES[shape])
    disguised = DISGUISES[disguise](secret, data.draw(st.integers(1, len(secret) - 1)))
    assert scan_text(disguised)
    shown = redact(f"before {disguised} after")
    tail = "" if shape.startswith("URL") else disguised[-6:]  # a token's own characters (a URL keeps its host)
    assert "<redacted>" in shown and secret not in shown and disguised not in shown and (not tail or tail not in shown)
    _refused_without_echo(disguised, {"algorithm": "lora_sft", "lr_scheduler_kwargs": {"root": {"x": [1, disguised]}}})


@pytest.mark.parametrize(
    "text",
    [
        "s3://bucket/caf%C3%A9/data%20set.jsonl",
        "hf://datasets/org/Grüße-2024",
        "１００％ ｄａｔａ ｓｅｔ",
        "a 100% sure run, 50%% off",
        "ｍｙ－ｐｒｏｊｅｃｔ\u200b",
        "https://host.example/x?q=%E2%9C%93&page=2",
        "模型微调 训练数据 第二版",
    ],
)
def test_ordinary_encoded_or_unicode_text_is_no_credential(text):
    assert (scan_text(text), redact(text)) == ([], text)


def test_disguised_secrets_in_a_spec_are_refused_and_nothing_is_written(tmp_path):
    from typer.testing import CliRunner

    from kubetune.cli import app

    spec = tmp_path / "spec.json"
    hf = "hf_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"
    document = {
        "algorithm": "lora_sft",
        "data_path": "https%3A%2F%2Fuser%3APa55wordXyz%40h/x.jsonl",
        "wandb_project": _full_width(hf),
        "wandb_entity": hf[:2] + "\u200b" + hf[2:],
    }
    spec.write_text(json.dumps(document, indent=1, ensure_ascii=False), encoding="utf-8")
    artifact = tmp_path / "kwargs.json"
    result = CliRunner().invoke(app, ["validate", "--pipeline", str(spec), "-o", str(artifact)])
    why = f"; secrets are never accepted as values ({HINT})"
    assert (result.exit_code, result.output.splitlines()) == (
        2,
        [
            f"invalid spec {spec}: 3 problem(s)",
            f"  - {spec}:3: `data_path`: looks like a credential (URL with credentials){why}",
            f"  - {spec}:4: `wandb_project`: looks like a credential (Hugging Face token){why}",
            f"  - {spec}:5: `wandb_entity`: looks like a credential (Hugging Face token){why}",
        ],
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.json"]


def test_a_percent_encoded_credential_parameter_is_not_sent(kfp_server):
    from typer.testing import CliRunner

    from kubetune.cli import app

    result = CliRunner().invoke(app, ["run", "-p", "data_uri=s3://b/p%3Ftoken%3DPa55wordXyz"])
    problem = "argument `data_uri`: looks like a credential (URL with a credential parameter)"
    assert (result.exit_code, result.output.splitlines()) == (2, ["invalid parameters: 1 problem(s)", f"  - {problem} ({HINT})"])
    assert kfp_server.requests == [] and "Pa55wordXyz" not in result.output
