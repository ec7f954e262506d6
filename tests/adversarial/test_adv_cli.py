"""Every CLI command, tried the way a careless user or a broken network would: each failure ends with one
message naming the host, file or field and exit code 2; Ctrl-C with "interrupted" and 130; a bug with one
"internal error" line and 1. Never a traceback, never a credential.

Real parts only: a closed loopback port (nothing listens), the recording KFP stand-in (tests/support/standins.py)
answering 401/403/500, a socket that accepts and never answers (for a real SIGINT), real files and paths.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kubetune.cli import app
from kubetune.errors import reported

TOKEN = "hf_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"  # secret-shaped: must never be printed
PASSWORD = "s3cr3t-Pa55word"
OSFT = {
    "algorithm": "osft", "unfreeze_rank_ratio": 0.25, "effective_batch_size": 8, "max_tokens_per_gpu": 2048,
    "max_seq_len": 1024, "learning_rate": 1e-5,
}  # fmt: skip

# every command that talks to KFP, as a user types it (after `kubetune`)
KFP_COMMANDS = {
    "upload": ["upload", "finetune"],
    "run": ["run", "finetune", "-p", "data_uri=s3://data/chat.jsonl"],
    "run --wait": ["run", "--wait", "--poll", "0.01"],
    "schedule create --cron": ["schedule", "create", "weekly", "--cron", "0 0 3 * * 1"],
    "schedule create --interval": ["schedule", "create", "hourly", "--interval", "3600"],
    "schedule list": ["schedule", "list"],
    "schedule pause": ["schedule", "pause", "recurring-1"],
    "schedule resume": ["schedule", "resume", "recurring-1"],
    "schedule delete": ["schedule", "delete", "recurring-1"],
}


def kubetune(*args: str, env: dict | None = None):
    return CliRunner().invoke(app, list(args), env=env)


@pytest.fixture
def closed_port():
    """A loopback port nothing listens on: bound, then closed."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def no_kfp_settings(monkeypatch):
    for name in ("KF_PIPELINES_ENDPOINT", "KF_PIPELINES_TOKEN", "KF_PIPELINES_UI_ENDPOINT", "KUBETUNE_DEBUG"):
        monkeypatch.delenv(name, raising=False)


def assert_one_line(result, code: int, line: str) -> None:
    assert (result.exit_code, result.output) == (code, line + "\n")


# -- an unreachable host --------------------------------------------------------------------------------


@pytest.mark.parametrize("command", KFP_COMMANDS.values(), ids=KFP_COMMANDS.keys())
def test_an_unreachable_host_is_one_line_naming_it(command, closed_port):
    result = kubetune(*command, "--host", f"http://127.0.0.1:{closed_port}")
    assert_one_line(result, 2, f"cannot reach http://127.0.0.1:{closed_port}: connection refused")


@pytest.mark.parametrize("command", KFP_COMMANDS.values(), ids=KFP_COMMANDS.keys())
def test_an_unreachable_host_named_with_credentials_shows_neither_password_nor_token(command, closed_port):
    host = f"http://admin:{PASSWORD}@127.0.0.1:{closed_port}/pipeline"
    result = kubetune(*command, "--host", host, "--token", TOKEN)
    assert_one_line(result, 2, f"cannot reach http://127.0.0.1:{closed_port}/pipeline: connection refused")


def test_a_host_that_does_not_resolve_is_named():
    result = kubetune("schedule", "list", "--host", "https://kfp.invalid:8888")
    assert_one_line(result, 2, "cannot reach https://kfp.invalid:8888: host name not found")


@pytest.mark.parametrize(
    ("host", "line"),
    [
        ("ftp://kfp.example", "--host: ftp://kfp.example scheme 'ftp' is not http or https"),
        ("http://kfp.example:99999", "--host: http://kfp.example has an invalid port"),
        ("http://", "--host: the URL names no host"),
    ],
)
def test_a_malformed_host_is_refused_before_connecting(host, line):
    assert_one_line(kubetune("upload", "--host", host), 2, line)


def test_no_host_and_no_kubeconfig_says_how_to_give_one(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    result = kubetune("schedule", "list")
    assert_one_line(result, 2, "KFP host: none given and no kubeconfig found (use --host or KF_PIPELINES_ENDPOINT)")


# -- a KFP that refuses us ------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 403])
@pytest.mark.parametrize("command", KFP_COMMANDS.values(), ids=KFP_COMMANDS.keys())
def test_a_refused_token_is_not_authorised_at_the_host_and_never_echoed(command, status, kfp_server):
    kfp_server.refuse = (status, f"token {TOKEN} is not valid")  # a server that echoes what it was sent
    result = kubetune(*command, "--token", TOKEN)
    reason = {401: "Unauthorized", 403: "Forbidden"}[status]
    line = f"not authorised at {kfp_server.url}: {status} {reason} (check --token or KF_PIPELINES_TOKEN)"
    assert_one_line(result, 2, line)
    assert kfp_server.requests[0]["auth"] == f"Bearer {TOKEN}"  # it was sent, where it belongs


def test_refused_after_connecting_in_a_namespace(kfp_server):
    """With --namespace, kfp.Client skips its health check: the first real call is refused, same line."""
    kfp_server.refuse = (403, "forbidden")
    result = kubetune("schedule", "list", "--namespace", "team-a", "--token", "plain-token-value")
    assert_one_line(result, 2, f"not authorised at {kfp_server.url}: 403 Forbidden (check --token or KF_PIPELINES_TOKEN)")


class LoginPage(BaseHTTPRequestHandler):
    """What an auth proxy or the KFP UI answers to every request: a web page."""

    def do_GET(self):
        page = b"<html>sign in</html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("options", [[], ["--namespace", "team-a"]], ids=["", "--namespace"])
def test_a_host_that_is_not_a_kfp_api_is_named(options):
    """A login page or the KFP UI answering where the API should: refused at the health check."""
    with ThreadingHTTPServer(("127.0.0.1", 0), LoginPage) as server:
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        host = f"http://127.0.0.1:{server.server_address[1]}"
        result = kubetune("schedule", "list", "--host", host, *options)
        server.shutdown()
    line = f"{host}: is not a KFP API server (/apis/v2beta1/healthz answered text/html) (give the KFP API endpoint)"
    assert_one_line(result, 2, line)


def test_https_to_a_plain_http_server_is_a_tls_error(kfp_server):
    host = kfp_server.url.replace("http://", "https://")
    result = kubetune("upload", "--host", host)
    assert result.exit_code == 2 and len(result.output.splitlines()) == 1
    assert result.output.startswith(f"cannot reach {host}: TLS error: ") and kfp_server.requests == []


def test_an_unknown_recurring_run_is_named_by_the_server(kfp_server):
    result = kubetune("schedule", "pause", "recurring-404")
    assert_one_line(result, 2, f"{kfp_server.url}: answered 404 Not Found: not found")


def test_a_server_error_is_named_with_its_message_redacted(kfp_server):
    kfp_server.refuse = (500, f"database down; retry with {TOKEN}")
    result = kubetune("upload", "--token", "an-opaque-token")
    assert_one_line(result, 2, f"{kfp_server.url}: answered 500 Internal Server Error: database down; retry with <redacted>")


def test_a_literal_token_of_any_shape_is_never_echoed(kfp_server):
    kfp_server.refuse = (500, "bad request from opaque-token-1234")
    result = kubetune("upload", "--token", "opaque-token-1234")
    assert_one_line(result, 2, f"{kfp_server.url}: answered 500 Internal Server Error: bad request from <redacted>")


# -- triggers and waits checked before connecting --------------------------------------------------------

CRON_6 = "KFP wants 6, seconds first (e.g. '0 0 3 * * 1')"


@pytest.mark.parametrize(
    ("options", "problems"),
    [
        (["--cron", "bad"], [f"cron: 'bad' has 1 fields; {CRON_6}"]),
        (["--cron", "0 3 * * 1"], [f"cron: '0 3 * * 1' has 5 fields; {CRON_6}"]),
        (["--cron", "0 0 24 * * 1"], ["cron: hours field '24' is not a value, range, list or step in 0..23"]),
        (["--cron", "60 0 3 * * 1"], ["cron: seconds field '60' is not a value, range, list or step in 0..59"]),
        (["--cron", "0 0 3 0 * 1"], ["cron: day of month field '0' is not a value, range, list or step in 1..31"]),
        (["--cron", "0 0 3 * 13 1"], ["cron: month field '13' is not a value, range, list or step in 1..12"]),
        (["--cron", "0 0 3 * * 7"], ["cron: day of week field '7' is not a value, range, list or step in 0..6"]),
        (["--cron", "0 0 3 * * FRI-MON"], ["cron: day of week field 'FRI-MON' is not a value, range, list or step in 0..6"]),
        (["--cron", "*/0 0 3 * * 1"], ["cron: seconds field '*/0' is not a value, range, list or step in 0..59"]),
        (["--cron", "0 ? 3 * * 1"], ["cron: minutes field '?' is not a value, range, list or step in 0..59"]),
        ([], ["schedule: give exactly one of --cron or --interval"]),
        (["--cron", "0 0 3 * * 1", "--interval", "60"], ["schedule: give exactly one of --cron or --interval"]),
        (["--interval", "0"], ["interval: 0 is not a positive number of seconds"]),
        (["--interval", "60", "--max-concurrency", "11"], ["max_concurrency: 11 is not in 1..10 (KFP's limits)"]),
        (
            ["--interval", "60", "--start", "tomorrow"],
            ["start: 'tomorrow' is not an RFC 3339 time (e.g. 2026-01-31T03:00:00Z)"],
        ),
        (
            ["--interval", "60", "--start", "2026-01-01T00:00:00"],  # no offset: not RFC 3339
            ["start: '2026-01-01T00:00:00' is not an RFC 3339 time (e.g. 2026-01-31T03:00:00Z)"],
        ),
        (
            ["--interval", "60", "--end", "2026-02-30T00:00:00Z"],
            ["end: '2026-02-30T00:00:00Z' is not an RFC 3339 time (e.g. 2026-01-31T03:00:00Z)"],
        ),
        (
            ["--interval", "60", "--start", "2026-03-01T00:00:00+01:00", "--end", "2026-02-28T23:00:00Z"],
            ["end: 2026-02-28T23:00:00Z is not after the start, 2026-03-01T00:00:00+01:00"],
        ),
        (
            ["--cron", "0 0 25 * * 1", "--end", "never"],
            [
                "cron: hours field '25' is not a value, range, list or step in 0..23",
                "end: 'never' is not an RFC 3339 time (e.g. 2026-01-31T03:00:00Z)",
            ],
        ),
    ],
)
def test_a_bad_trigger_is_refused_before_any_connection(options, problems, kfp_server):
    result = kubetune("schedule", "create", "nightly", *options)
    expected = [f"cannot schedule: {len(problems)} problem(s)"] + [f"  - {p}" for p in problems]
    assert (result.exit_code, result.output.splitlines()) == (2, expected)
    assert kfp_server.requests == []


@pytest.mark.parametrize(
    "cron", ["0 */5 9-17 ? JAN-JUN MON-FRI", "0 0 3 1,15 * ?", "30 0 0 * * 0", "0 0 0 31 12 *", "0-30/10 * * * * *"]
)
def test_a_valid_six_field_cron_is_sent_as_given(cron, kfp_server):
    result = kubetune("schedule", "create", "nightly", "--cron", cron)
    assert result.exit_code == 0, result.output
    (created,) = kfp_server.recurring.values()
    assert created["trigger"]["cron_schedule"]["cron"] == cron


@pytest.mark.parametrize(
    ("options", "line"),
    [
        (["--timeout", "0"], "  - --timeout: 0 is not a positive number of seconds"),
        (["--poll", "-1"], "  - --poll: -1 is not a positive number of seconds"),
    ],
)
def test_run_wait_needs_positive_timeout_and_poll_before_connecting(options, line, kfp_server):
    result = kubetune("run", "--wait", *options)
    assert (result.exit_code, result.output.splitlines()) == (2, ["cannot wait: 1 problem(s)", line])
    assert kfp_server.requests == []


def test_an_unknown_pipeline_is_refused_before_connecting(closed_port):
    result = kubetune("run", "nope", "--host", f"http://127.0.0.1:{closed_port}")
    assert result.exit_code == 2 and result.output.splitlines() == [
        "cannot compile: 1 problem(s)",
        "  - pipeline: unknown pipeline 'nope'; choose from finetune, finetune-workspace, finetune-trainjob, evaluate-export",
    ]


# -- outputs that cannot be written, checked before any work ---------------------------------------------


@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "osft.json"
    path.write_text(json.dumps(OSFT))
    return path


def test_an_existing_file_is_replaced_only_when_this_command_wrote_it(tmp_path, spec):
    keep = tmp_path / "keep.txt"
    keep.write_text("precious")
    refused = "exists and was not written by this command; remove it or choose another path"
    assert_one_line(kubetune("validate", str(spec), "-o", str(spec)), 2, f"-o {spec}: {refused}")  # its own input
    assert_one_line(kubetune("validate", str(spec), "-o", str(keep)), 2, f"-o {keep}: {refused}")
    assert json.loads(spec.read_text()) == OSFT and keep.read_text() == "precious"
    assert kubetune("validate", "--pipeline", str(spec), "-o", str(tmp_path / "a.json")).exit_code == 0
    assert kubetune("validate", "--pipeline", str(spec), "-o", str(tmp_path / "a.json")).exit_code == 0  # ours: replaced
    (tmp_path / "user.yaml").write_text("x: 1\n")
    user = tmp_path / "user.yaml"
    assert_one_line(kubetune("compile", "finetune", "-o", str(user)), 2, f"-o {user}: {refused}")
    for name in ("out.json", "out", "out.YAML"):
        message = "must end with .yaml or .yml (KFP writes pipelines as YAML)"
        assert_one_line(kubetune("compile", "finetune", "-o", str(tmp_path / name)), 2, f"-o {tmp_path / name}: {message}")
    assert kubetune("compile", "finetune", "-o", str(tmp_path / "c.yaml")).exit_code == 0
    assert kubetune("compile", "finetune", "-o", str(tmp_path / "c.yaml")).exit_code == 0  # ours: replaced
    assert (tmp_path / "user.yaml").read_text() == "x: 1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "c.yaml", "keep.txt", "osft.json", "user.yaml"]


def _output_cases(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    (tmp_path / "a-folder").mkdir()
    return {
        "under a regular file": (a_file / "x.yaml", f"{a_file} is not an existing folder"),
        "in a missing folder": (tmp_path / "missing" / "x.yaml", f"{tmp_path / 'missing'} is not an existing folder"),
        "a folder": (tmp_path / "a-folder", "is a folder; give a file path"),
        "in a folder that takes no files": (Path("/proc/x.yaml"), "cannot be written: {reason}"),
    }


@pytest.mark.parametrize("command", ["validate", "compile"])
@pytest.mark.parametrize("case", ["under a regular file", "in a missing folder", "a folder", "in a folder that takes no files"])
def test_an_unwritable_output_is_refused_before_any_work(command, case, tmp_path, spec):
    output, message = _output_cases(tmp_path)[case]
    try:  # what the kernel says to anyone creating a file there (root ignores modes; /proc takes no files)
        os.close(os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
        reason = "created"
    except OSError as e:
        reason = e.strerror
    assert reason != "created"
    args = ["validate", str(spec)] if command == "validate" else ["compile", "finetune"]
    result = kubetune(*args, "-o", str(output))
    assert_one_line(result, 2, f"-o {output}: {message.format(reason=reason)}")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["a-file", "a-folder", "osft.json"])


def test_a_failed_validate_leaves_the_old_output_whole(tmp_path, spec):
    artifact = tmp_path / "artifact.json"
    assert kubetune("validate", str(spec), "--pipeline", "-o", str(artifact)).exit_code == 0
    before = artifact.read_bytes()
    spec.write_text(json.dumps({**OSFT, "learning_rate": -1}))
    result = kubetune("validate", str(spec), "--pipeline", "-o", str(artifact))
    assert result.exit_code == 2 and "learning_rate" in result.output
    assert artifact.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifact.json", "osft.json"]  # no partial file left


def test_compile_writes_the_whole_file_with_the_umask_modes(tmp_path):
    output = tmp_path / "finetune.yaml"
    result = kubetune("compile", "finetune", "-o", str(output))
    assert (result.exit_code, result.output) == (0, f"wrote {output}\n")
    assert [p.name for p in tmp_path.iterdir()] == ["finetune.yaml"] and output.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize(("kind", "reason"), [("missing", "No such file or directory"), ("a folder", "Is a directory")])
def test_an_unreadable_spec_is_named_before_connecting(kind, reason, tmp_path, closed_port):
    spec = tmp_path / "osft.json"
    if kind == "a folder":
        spec.mkdir()
    result = kubetune("run", "--spec", str(spec), "--host", f"http://127.0.0.1:{closed_port}")
    expected = [f"invalid spec {spec}: 1 problem(s)", f"  - {spec}: cannot be read: {reason}"]
    assert (result.exit_code, result.output.splitlines()) == (2, expected)


# -- verify ---------------------------------------------------------------------------------------------


def _export(folder: Path) -> Path:
    folder.mkdir()
    files = {"config.json": b"{}", "model.safetensors": b"weights" * 100}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    manifest = {"format": 1, "files": {n: {"bytes": len(d), "sha256": hashlib.sha256(d).hexdigest()} for n, d in files.items()}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_verify_a_complete_export(tmp_path):
    export = _export(tmp_path / "model")
    assert (kubetune("verify", str(export)).exit_code, kubetune("verify", str(export)).output) == (0, f"{export}: complete\n")


def test_verify_names_every_problem_on_its_own_line(tmp_path):
    export = _export(tmp_path / "model")
    (export / "model.safetensors").write_bytes(b"changed")
    (export / "config.json").unlink()
    (export / "notes.txt").write_text("added later")
    result = kubetune("verify", str(export))
    assert result.exit_code == 2
    assert sorted(result.output.splitlines()) == [
        f"{export}: config.json is missing",
        f"{export}: model.safetensors does not match its checksum",
        f"{export}: notes.txt is not in the manifest",
    ]


def test_verify_without_a_manifest_says_incomplete(tmp_path):
    export = _export(tmp_path / "model")
    (export / "manifest.json").unlink()
    result = kubetune("verify", str(export))
    assert_one_line(result, 2, f"{export / 'manifest.json'} is missing: the export is incomplete")


def test_verify_a_truncated_manifest_is_an_error_not_a_traceback(tmp_path):
    export = _export(tmp_path / "model")
    manifest = export / "manifest.json"
    manifest.write_text(manifest.read_text()[:30])
    result = kubetune("verify", str(export))
    assert result.exit_code == 2 and len(result.output.splitlines()) == 1
    assert result.output.startswith(f"{manifest} is not a valid manifest: truncated or not JSON: ")


@pytest.mark.parametrize("kind", ["missing", "a file"])
def test_verify_a_path_that_is_not_an_export_folder(kind, tmp_path):
    path = tmp_path / "x"
    if kind == "a file":
        path.write_text("x")
    result = kubetune("verify", str(path))
    assert_one_line(result, 2, f"{path}: {'is not an existing folder' if kind == 'missing' else 'is not a folder'}")


def test_verify_an_unreachable_s3_endpoint_names_it(closed_port, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    result = kubetune("verify", "s3://models/chat/v1")
    line = f"s3://models/chat/v1: cannot reach http://127.0.0.1:{closed_port}/models: connection refused"
    assert_one_line(result, 2, line)


# -- Ctrl-C, bugs, and the pipeline steps ---------------------------------------------------------------


@pytest.mark.parametrize("command", [["upload"], ["schedule", "list"]])
def test_ctrl_c_while_waiting_on_a_silent_host_is_one_line_and_130(command):
    """A real SIGINT to a real process blocked on a host that accepted the connection and never answers."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        silent.settimeout(120)
        host = f"http://127.0.0.1:{silent.getsockname()[1]}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KF_PIPELINES", "KUBETUNE_DEBUG"))}
        process = subprocess.Popen(
            [sys.executable, "-m", "kubetune.cli", *command, "--host", host, "--token", TOKEN],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            connection, _ = silent.accept()
            with connection:
                request = b""
                while b"\r\n\r\n" not in request:  # the whole request is sent: it now waits for an answer
                    request += connection.recv(65536) or b"\r\n\r\n"
                process.send_signal(signal.SIGINT)
                stdout, stderr = process.communicate(timeout=120)
        finally:
            process.kill()
    assert (process.returncode, stdout, stderr) == (130, "", "interrupted\n")


def test_ctrl_c_while_waiting_for_a_run_says_the_run_goes_on(kfp_server):
    kfp_server.run_states = ["RUNNING"] * 2000
    process = subprocess.Popen(
        [sys.executable, "-m", "kubetune.cli", "run", "--wait", "--poll", "0.05", "--host", kfp_server.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = [process.stdout.readline()]
        while lines[-1] and not lines[-1].startswith("run "):  # links, "started run ...", then the first state
            lines.append(process.stdout.readline())
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    (run_id,) = kfp_server.runs
    assert lines[-2:] == [f"started run {run_id} of finetune version {lines[-2].split()[-1]}\n", f"run {run_id}: RUNNING\n"]
    assert (process.returncode, stderr) == (130, f"interrupted: run {run_id} goes on in KFP (only the waiting stopped)\n")


def test_a_bug_is_one_internal_error_line_with_the_traceback_kept_aside(monkeypatch, tmp_path):
    from kubetune.runs import kfp_api

    def broken(name, output):
        raise ZeroDivisionError(f"division by zero near {TOKEN}")

    monkeypatch.setattr(kfp_api, "compile_pipeline", broken)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    result = kubetune("compile", "finetune", "-o", str(tmp_path / "x.yaml"))
    (kept,) = tmp_path.glob("kubetune-error-*.txt")
    line = f"internal error: ZeroDivisionError: division by zero near <redacted> (a bug in kubetune; traceback in {kept})"
    assert_one_line(result, 1, line)
    assert "Traceback (most recent call last)" in kept.read_text() and TOKEN not in kept.read_text()


def test_kubetune_debug_prints_the_traceback_of_a_bug(monkeypatch, tmp_path):
    from kubetune.runs import kfp_api

    monkeypatch.setattr(kfp_api, "compile_pipeline", lambda name, output: {}["missing"])
    result = kubetune("compile", "finetune", "-o", str(tmp_path / "x.yaml"), env={"KUBETUNE_DEBUG": "1"})
    assert result.exit_code == 1 and result.output.startswith("Traceback (most recent call last)")
    assert result.output.endswith("internal error: KeyError: 'missing'\n")


def test_a_bad_spec_in_a_subprocess_has_no_traceback_on_stderr(tmp_path):
    spec = tmp_path / "osft.json"
    spec.write_text('{"algorithm": "osft",\n "learning_rate": "fast"}')
    result = subprocess.run(
        [sys.executable, "-m", "kubetune.cli", "validate", str(spec), "-o", str(tmp_path / "a-file" / "x.json")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"-o {tmp_path / 'a-file' / 'x.json'}: {tmp_path / 'a-file'} is not an existing folder\n"


@pytest.mark.parametrize(
    ("fail", "code", "line"),
    [
        ("missing file", 2, "{tmp}/missing.jsonl: No such file or directory"),
        ("closed port", 2, "cannot reach http://127.0.0.1:{port}: connection refused"),
        ("ctrl-c", 130, "interrupted"),
        ("bug", 1, "internal error: AttributeError: 'NoneType' object has no attribute 'split'"),
    ],
)
def test_a_pipeline_step_ends_with_one_line_and_its_exit_code(fail, code, line, tmp_path, closed_port, capsys):
    """What every component wraps its work in (components/*/component.py): ``kubetune.errors.reported``."""
    import urllib3

    def step():
        if fail == "missing file":
            open(tmp_path / "missing.jsonl").close()
        elif fail == "closed port":
            urllib3.PoolManager().request("GET", f"http://127.0.0.1:{closed_port}/data", retries=False)
        elif fail == "ctrl-c":
            raise KeyboardInterrupt
        else:
            None.split()  # type: ignore[attr-defined]

    with pytest.raises(SystemExit) as ended, reported():
        step()
    stderr = capsys.readouterr().err
    assert ended.value.code == code
    assert stderr.split(" (a bug in kubetune")[0] == line.format(tmp=tmp_path, port=closed_port) + ("" if fail == "bug" else "\n")


# -- round 2: usage errors, malformed settings, special files, redacted results ----------------------------


def _usage(command: str, error: str, arguments: str = " [OPTIONS]") -> list[str]:
    return [f"Usage: kubetune {command}{arguments}", f"Try 'kubetune {command} --help' for help.", "", f"Error: {error}"]


@pytest.mark.parametrize(
    ("args", "lines"),
    [
        (["validate"], _usage("validate", "Missing argument 'spec'.", " [OPTIONS] {spec}")),
        (["prepare"], _usage("prepare", "Missing argument 'data'.", " [OPTIONS] {data}")),
        (["verify"], _usage("verify", "Missing argument 'uri'.", " [OPTIONS] {uri}")),
        (["validate", "--zzz-unknown", "ok.json"], _usage("validate", "No such option: --zzz-unknown", " [OPTIONS] {spec}")),
        (
            ["prepare", "x", "--seed", "abc"],
            _usage(
                "prepare",
                "Invalid value for '--seed': Input should be a valid integer, unable to parse string as an integer",
                " [OPTIONS] {data}",
            ),
        ),
        (["nosuchcommand"], _usage("", "No such command 'nosuchcommand'.", "[OPTIONS] COMMAND [ARGS]...")),
        (["schedule", "create"], _usage("schedule create", "Missing argument 'name'.", " [OPTIONS] {name}")),
        ([TOKEN], _usage("", f"No such command '{TOKEN}'.", "[OPTIONS] COMMAND [ARGS]...")),  # shown redacted
    ],
    ids=["validate", "prepare", "verify", "no-such-option", "bad-int", "no-such-command", "schedule", "token"],
)
def test_a_usage_error_is_clicks_usage_message_and_exit_2_with_no_traceback_file(args, lines, monkeypatch, tmp_path):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    result = CliRunner().invoke(app, args, prog_name="kubetune")
    expected = [line.replace("kubetune  ", "kubetune ").replace(TOKEN, "<redacted>") for line in lines]
    assert (result.exit_code, result.output.splitlines()) == (2, expected)
    assert list(tmp_path.iterdir()) == []  # no traceback file: a usage error is not a bug


@pytest.mark.parametrize(
    ("command", "env", "line"),
    [
        (["upload", "--host", "http://[::1"], {}, "--host: is not a valid URL (Invalid IPv6 URL) (give http(s)://host[:port])"),
        (
            ["upload"],
            {"KF_PIPELINES_ENDPOINT": f"http://admin:{PASSWORD}@[::1"},
            "KF_PIPELINES_ENDPOINT: is not a valid URL (Invalid IPv6 URL) (give http(s)://host[:port])",
        ),
        (
            ["verify", "s3://bucket/prefix"],
            {"AWS_ENDPOINT_URL": "not a url", "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"},
            "AWS_ENDPOINT_URL: is not a valid endpoint URL (give http(s)://host[:port])",
        ),
    ],
    ids=["--host", "KF_PIPELINES_ENDPOINT", "AWS_ENDPOINT_URL"],
)
def test_a_setting_that_is_not_a_url_is_one_line_naming_it(command, env, line, monkeypatch, tmp_path):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert_one_line(kubetune(*command), 2, line)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("command", "title"),
    [
        (["validate", "{path}"], "invalid spec {path}"),
        (["run", "--spec", "{path}", "--host", "http://127.0.0.1:9"], "invalid spec {path}"),
        (["run-local", "--kwargs", "{path}", "-o", "{tmp}/run"], "invalid run-local options"),
    ],
    ids=["validate", "run --spec", "run-local --kwargs"],
)
@pytest.mark.parametrize("kind", ["a FIFO", "a character device"])
def test_a_spec_that_is_not_a_regular_file_is_refused_without_reading(command, title, kind, tmp_path):
    path = tmp_path / "fifo.json"
    if kind == "a FIFO":
        os.mkfifo(path)  # no writer ever comes: reading it would block forever
    else:
        path = Path("/dev/zero")  # endless: reading it would never end
    args = [a.format(path=path, tmp=tmp_path) for a in command]
    result = kubetune(*args)
    expected = [f"{title.format(path=path)}: 1 problem(s)", f"  - {path}: is not a regular file but {kind}; give a JSON file"]
    assert (result.exit_code, result.output.splitlines()) == (2, expected)
    assert not (tmp_path / "run").exists()


def test_a_result_naming_a_credential_is_printed_redacted(tmp_path, spec):
    folder = tmp_path / TOKEN
    folder.mkdir()
    result = kubetune("validate", str(spec), "--pipeline", "-o", str(folder / "kwargs.json"))
    assert (result.exit_code, result.output) == (0, f"wrote {tmp_path}/<redacted>/kwargs.json\n")
    assert json.loads((folder / "kwargs.json").read_text())["algorithm"] == "osft"


BYPASS = ["-p", 'training_kwargs={"learning_rate": -1, "lerning_rate": 3}', "-p", "algorithm=nonsense", "-p", "gpus=many"]


@pytest.mark.parametrize(
    ("command", "lines"),
    [
        (
            ["run", "--spec", "{spec}", *BYPASS, "-p", "gpu=8", "-p", "seed=1.5", "-p", "merge_adapter=1"],
            [
                "invalid parameters: 6 problem(s)",
                "  - -p training_kwargs: is given by --spec too; give one or the other",
                "  - -p algorithm: is given by --spec too; give one or the other",
                "  - -p gpus: is text; finetune takes an integer (Integer)",
                "  - -p gpu: is not a parameter of finetune (did you mean gpus?)",
                "  - -p seed: is a number; finetune takes an integer (Integer)",
                "  - -p merge_adapter: is an integer; finetune takes true or false (Boolean)",
            ],
        ),
        (
            ["schedule", "create", "weekly", "--cron", "0 0 3 * * 1", "-p", 'training_kwargs={"learning_rate": -1}'],
            ["invalid parameters: 1 problem(s)", "  - -p training_kwargs: `learning_rate`: Input should be greater than 0"],
        ),
        (
            ["run", "-p", 'training_kwargs={"lerning_rate": 3}', "-p", "nodeselector={}"],
            [
                "invalid parameters: 2 problem(s)",
                "  - -p nodeselector: is not a parameter of finetune (did you mean node_selector?)",
                "  - -p training_kwargs: `lerning_rate`: is not a parameter of lora_sft nor a field of unsloth's "
                "configuration (did you mean `learning_rate` or `logging_strategy`?)",
            ],
        ),
        (
            ["run", "evaluate-export", "-p", "max_seq_len=long"],
            [
                "invalid parameters: 4 problem(s)",
                "  - -p max_seq_len: is text; evaluate-export takes an integer (Integer)",
                "  - -p trained_model_uri: is required by evaluate-export",
                "  - -p data_uri: is required by evaluate-export",
                "  - -p model_uri: is required by evaluate-export",
            ],
        ),
    ],
    ids=["run --spec", "schedule create", "run -p training_kwargs", "evaluate-export"],
)
def test_every_pipeline_argument_is_checked_before_anything_is_sent(command, lines, spec, kfp_server):
    result = kubetune(*[str(spec) if a == "{spec}" else a for a in command])
    assert (result.exit_code, result.output.splitlines()) == (2, lines)
    assert kfp_server.requests == []  # nothing reached KFP


def test_a_string_parameter_is_sent_as_written_and_the_others_typed(kfp_server):
    args = ["-p", "model_uri=0123", "-p", "validation_ratio=1", "-p", 'node_selector={"pool": "a100"}', "-p", "gpus=2"]
    result = kubetune("run", *args)
    assert result.exit_code == 0, result.output
    ((run,),) = [[r for r in kfp_server.requests if r["method"] == "POST" and r["path"].endswith("/runs")]]
    sent = run["body"]["runtime_config"]["parameters"]
    assert sent == {"model_uri": "0123", "validation_ratio": 1, "node_selector": {"pool": "a100"}, "gpus": 2}
