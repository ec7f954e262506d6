"""checkpoint_storage's s3:// mirror (kubetune.checkpoint_mirror) on checkpoint folders written by the test (real
files in TRL's ``checkpoint-N`` layout) against the moto server over real HTTP; faults and kills at the HTTP layer
(tests/support/standins.FaultyProxy), never a mock of our code."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from kubetune.checkpoint_mirror import MARKER, Mirror, complete_saves
from kubetune.errors import KubetuneError

SECRET = "wJalrXUtnFEMIK7MDENGbPxRfiCYzEXAMPLEKEY"
URI = "s3://ckpt/runs/one"


def checkpoint(root: Path, step: int, complete: bool = True) -> Path:
    """TRL's ``checkpoint-N`` as the completeness check reads it: adapter, optimizer, scheduler, trainer state last."""
    import numpy as np
    from safetensors.numpy import save_file

    path = root / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(json.dumps({"r": 8}))
    save_file({"w": np.full(4 * step, step, dtype=np.float32)}, str(path / "adapter_model.safetensors"))
    for name in ("optimizer.pt", "scheduler.pt"):
        with zipfile.ZipFile(path / name, "w") as archive:
            archive.writestr("data.pkl", b"x" * step)
    if complete:
        (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return path


@pytest.fixture
def bucket(s3, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # a fault is seen at once (the mirror retries itself)
    s3.create_bucket(Bucket="ckpt")
    return s3


def objects(s3) -> dict[str, bytes]:
    listed = s3.list_objects_v2(Bucket="ckpt").get("Contents", [])
    return {o["Key"]: s3.get_object(Bucket="ckpt", Key=o["Key"])["Body"].read() for o in listed}


def mirror_all(root: Path, retention: int = 0) -> list[str]:
    said: list[str] = []
    mirror = Mirror(URI, root, retention, said.append)
    mirror.check_access()
    mirror.finish()
    return said


def test_complete_saves_are_mirrored_marker_last_and_a_fresh_output_restores_the_newest(
    bucket, tmp_path, faulty_proxy, monkeypatch
):
    out = tmp_path / "out"
    for step in (1, 2):
        checkpoint(out, step)
    checkpoint(out, 3, complete=False)  # a kill mid-save: never mirrored
    (out / "training_metrics_0.jsonl").write_text('{"step": 1}\n{"step": 2}\n')
    proxy = faulty_proxy(lambda method, path: None)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    said = mirror_all(out)
    stored = objects(bucket)
    assert {k.rsplit("/", 2)[-2] for k in stored if k.endswith(MARKER)} == {"checkpoint-1", "checkpoint-2"}
    assert not [k for k in stored if "checkpoint-3" in k] and ".kubetune-access-probe" not in " ".join(stored)
    marker = json.loads(stored[f"runs/one/checkpoint-2/{MARKER}"])
    assert marker["writer"] == "kubetune" and marker["files"] == {
        p.name: p.stat().st_size for p in sorted((out / "checkpoint-2").iterdir())
    }
    assert marker["sha256"] == {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (out / "checkpoint-2").iterdir()}
    puts = [path for method, path, _ in proxy.requests if method == "PUT" and "checkpoint-2" in path]
    assert puts[-1].endswith(f"checkpoint-2/{MARKER}") and len(puts) == len(marker["files"]) + 1  # the marker last
    assert stored["runs/one/training_metrics_0.jsonl"] == b'{"step": 1}\n{"step": 2}\n'
    assert f"[kubetune] mirrored checkpoint-2 to {URI}/checkpoint-2" in said

    fresh, lines = tmp_path / "fresh", []
    fresh.mkdir()
    assert Mirror(URI, fresh, 0, lines.append).restore("lora_sft") == "checkpoint-2"
    assert [s.prefix for s in complete_saves(fresh)] == ["checkpoint-1", "checkpoint-2"]
    assert (fresh / "training_metrics_0.jsonl").read_bytes() == (out / "training_metrics_0.jsonl").read_bytes()
    assert lines == [f"[kubetune] restored checkpoint-2 (1 model saves, 1 metrics files) from {URI}/checkpoint-2 into {fresh}"]
    assert not (fresh / ".restore-tmp").exists()
    assert Mirror(URI, fresh, 0, lines.append).restore("lora_sft") is None  # a complete local state: nothing restored
    assert lines[-1] == f"[kubetune] checkpoint-2 in the output: resuming from it, nothing restored from {URI}"


def test_restore_verifies_each_file_against_the_marker_and_ignores_markers_kubetune_did_not_write(bucket, tmp_path):
    out = tmp_path / "out"
    for step in (1, 2):
        checkpoint(out, step)
    mirror_all(out)
    same_size = b"X" + (out / "checkpoint-2" / "adapter_model.safetensors").read_bytes()[1:]
    bucket.put_object(Bucket="ckpt", Key="runs/one/checkpoint-2/adapter_model.safetensors", Body=same_size)
    checkpoint(out, 3)
    mirror_all(out)
    bucket.delete_object(Bucket="ckpt", Key="runs/one/checkpoint-3/optimizer.pt")  # one object lost: that prefix only
    bucket.put_object(Bucket="ckpt", Key="runs/one/checkpoint-9/adapter_model.safetensors", Body=b"x")
    bucket.put_object(Bucket="ckpt", Key=f"runs/one/checkpoint-9/{MARKER}", Body=b"123:456")  # Training Hub's marker
    fresh, lines = tmp_path / "fresh", []
    fresh.mkdir()
    assert Mirror(URI, fresh, 0, lines.append).restore("lora_sft") == "checkpoint-1"
    assert lines[0] == f"[kubetune] not restoring {URI}/checkpoint-3: {URI}/checkpoint-3/optimizer.pt is missing"
    tampered = "adapter_model.safetensors's SHA-256 differs from its marker's"
    assert lines[1] == f"[kubetune] not restoring {URI}/checkpoint-2: {tampered}"
    assert not (fresh / "checkpoint-2").exists() and not (fresh / "checkpoint-9").exists()

    empty, lines = tmp_path / "empty", []
    empty.mkdir()
    assert Mirror("s3://ckpt/other", empty, 0, lines.append).restore("lora_sft") is None
    assert lines == ["[kubetune] no complete resumable save in s3://ckpt/other: training starts from the beginning"]


def test_retention_prunes_older_kubetune_saves_and_never_what_kubetune_did_not_write(bucket, tmp_path):
    out = tmp_path / "out"
    bucket.put_object(Bucket="ckpt", Key="runs/one/checkpoint-0/adapter_model.safetensors", Body=b"theirs")
    bucket.put_object(Bucket="ckpt", Key=f"runs/one/checkpoint-0/{MARKER}", Body=b"1:2")  # another writer's, older
    bucket.put_object(Bucket="ckpt", Key="runs/one/checkpoint-1/notes.txt", Body=b"a user's note")
    bucket.put_object(Bucket="ckpt", Key="runs/one/README", Body=b"not a save")
    for step in (1, 2, 3, 4):
        checkpoint(out, step)
    with pytest.raises(KubetuneError) as info:  # another writer's save: refused before training, not when it uploads
        mirror_all(out)
    assert info.value.problems[0].where == f"{URI}/checkpoint-0" and "kubetune did not write" in info.value.report()
    Mirror(URI, out, 0).finish()  # had it been let in (retention 0: every save kept)
    assert len([k for k in objects(bucket) if k.endswith(MARKER)]) == 5
    said: list[str] = []
    Mirror(URI, out, 2, said.append).finish()
    stored = objects(bucket)
    assert sorted(k for k in stored if k.endswith(MARKER)) == [
        f"runs/one/checkpoint-{n}/{MARKER}" for n in (0, 3, 4)
    ]  # fmt: skip
    assert [k for k in stored if "checkpoint-1/" in k or "checkpoint-2/" in k] == ["runs/one/checkpoint-1/notes.txt"]
    assert stored["runs/one/checkpoint-0/adapter_model.safetensors"] == b"theirs" and "runs/one/README" in stored
    assert f"[kubetune] pruned {URI}/checkpoint-1 (checkpoint_retention=2)" in said


def test_a_failed_upload_is_one_error_naming_the_prefix_and_that_save_stays_unmarked(bucket, tmp_path, faulty_proxy, monkeypatch):
    out = tmp_path / "out"
    for step in (1, 2):
        checkpoint(out, step)
    proxy = faulty_proxy(lambda method, path: "fail" if method == "PUT" and "checkpoint-2/optimizer.pt" in path else None)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    with pytest.raises(KubetuneError) as info:
        mirror_all(out)
    text = info.value.report()
    assert f"{URI}/checkpoint-2" in text and "that save is not marked complete" in text and SECRET not in text
    assert len(info.value.problems) == 1
    markers = [k for k in objects(bucket) if k.endswith(MARKER)]
    assert markers == [f"runs/one/checkpoint-1/{MARKER}"]


def test_a_bad_bucket_fails_the_access_probe_before_anything_else(bucket, tmp_path):
    with pytest.raises(KubetuneError) as info:
        Mirror("s3://no-such-bucket/run", tmp_path).check_access()
    assert "s3://no-such-bucket/run" in info.value.report() and "the bucket does not exist" in info.value.report()
    assert SECRET not in info.value.report()


UPLOAD = (
    "import sys; from pathlib import Path; from kubetune.checkpoint_mirror import Mirror; "
    "Mirror(sys.argv[1], Path(sys.argv[2]), 0).finish()"
)


def test_a_kill_at_every_request_of_an_upload_leaves_the_save_marked_whole_or_unmarked(bucket, tmp_path, faulty_proxy):
    """The uploading process is SIGKILLed as its k-th request of the save reaches the server (before it lands), for
    every k; what is left is either marked with every file there, or unmarked, and a restore takes it only then."""
    out = tmp_path / "out"
    checkpoint(out, 1)
    files = len(list((out / "checkpoint-1").iterdir()))
    state: dict = {"pid": None, "seen": 0, "at": 0}

    def kill(method: str, path: str) -> str | None:
        if method != "PUT" or "checkpoint-1" not in path:
            return None
        state["seen"] += 1
        if state["seen"] == state["at"]:
            os.kill(state["pid"], signal.SIGKILL)
            return "drop"
        return None

    proxy = faulty_proxy(kill)
    env = {**os.environ, "AWS_ENDPOINT_URL": proxy.url}
    for at in range(1, files + 3):  # files, then the marker, then none (the upload finishes)
        for key in objects(bucket):
            bucket.delete_object(Bucket="ckpt", Key=key)
        state.update(seen=0, at=at)
        process = subprocess.Popen([sys.executable, "-c", UPLOAD, URI, str(out)], env=env)
        state["pid"] = process.pid
        code = process.wait(timeout=60)
        stored = objects(bucket)
        marked = f"runs/one/checkpoint-1/{MARKER}" in stored
        assert code == (0 if at > files + 1 else -signal.SIGKILL), at
        assert marked == (at > files + 1), at
        if marked:
            assert len(stored) == files + 1
        fresh = tmp_path / f"fresh-{at}"
        fresh.mkdir()
        assert Mirror(URI, fresh, 0, lambda line: None).restore("lora_sft") == ("checkpoint-1" if marked else None), at


@pytest.mark.parametrize("algorithm", ["lora_sft", "sft"])
def test_a_trainjob_node_0_probes_the_mirror_before_any_training_process_starts(bucket, tmp_path, algorithm):
    """Node 0 mirrors (it holds the S3 secret): around its TRL workers (lora_sft) or inside the training step (sft);
    a bucket it cannot write ends the node with one line before training."""
    from kubetune.steps.validate import validate_to_artifact

    kwargs = {"lora_sft": {"max_steps": 2}, "sft": {"effective_batch_size": 8, "max_tokens_per_gpu": 1024, "max_seq_len": 512,
              "learning_rate": 1e-3}}[algorithm]  # fmt: skip
    artifact = tmp_path / "kwargs.json"
    validate_to_artifact(algorithm, {**kwargs, "checkpoint_storage": "s3://no-such-bucket/run"}, artifact)
    env = {**os.environ, "PET_NNODES": "1", "PET_NODE_RANK": "0", "PET_MASTER_ADDR": "127.0.0.1", "PET_MASTER_PORT": "29511",
           "PET_NPROC_PER_NODE": "1"}  # fmt: skip
    args = ["--kwargs", str(artifact), "--model", "/nonexistent", "--train-data", str(tmp_path), "--output", str(tmp_path / "o")]
    done = subprocess.run(
        [sys.executable, "-m", "kubetune.cluster.node_cli", "train", *args], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1] == "  - s3://no-such-bucket/run: the bucket does not exist", done.stderr
    assert "torch.distributed.run" not in done.stdout + done.stderr and SECRET not in done.stdout + done.stderr


def test_a_negative_retention_and_a_bucket_root_are_refused_before_anything_is_deleted(bucket, tmp_path):
    from kubetune.checkpoint_mirror import mirrored
    from kubetune.runs.kfp_api import parameters
    from kubetune.validation import validate_spec

    out = tmp_path / "out"
    checkpoint(out, 1)
    mirror_all(out)
    for retention in (-5, -1):
        with pytest.raises(KubetuneError) as info, mirrored(None, out, "lora_sft", retention):
            pass
        assert info.value.problems[0].where == "checkpoint_retention", info.value.report()
        with pytest.raises(KubetuneError) as info:
            parameters(None, [f"checkpoint_retention={retention}"])
        assert [p.where for p in info.value.problems] == ["-p checkpoint_retention"]
    assert f"runs/one/checkpoint-1/{MARKER}" in objects(bucket)
    for root in ("s3://ckpt", "s3://ckpt/", "s3://ckpt//"):
        with pytest.raises(KubetuneError) as info:
            validate_spec({"algorithm": "lora_sft", "checkpoint_storage": root}, require_paths=False)
        assert "is a bucket root" in info.value.report() and "checkpoint_storage" in info.value.report()
        with pytest.raises(KubetuneError, match="bucket root"):
            Mirror(root, out)


def test_retention_never_reaches_into_another_runs_mirror_above_or_below_its_prefix(bucket, tmp_path):
    """Run b mirrors to runs/b; run a at runs (above it) or c at runs/b/c (below it) is refused at the probe, and
    pruning only ever looks at the layout's save folders directly under its own prefix."""
    out = tmp_path / "out"
    for step in (1, 2, 3):
        checkpoint(out, step)
    Mirror("s3://ckpt/runs/b", out, 0, print).check_access()
    Mirror("s3://ckpt/runs/b", out, 0, print).finish()
    for uri, message in (("s3://ckpt/runs", "holds another checkpoint mirror (s3://ckpt/runs/b)"),
                         ("s3://ckpt/runs/b/c", "lies inside the checkpoint mirror s3://ckpt/runs/b")):  # fmt: skip
        with pytest.raises(KubetuneError) as info:
            Mirror(uri, out, 1).check_access()
        assert info.value.problems[0].message == message, info.value.report()
    bucket.delete_object(Bucket="ckpt", Key="runs/b/.kubetune-mirror")  # an older mirror: found by its markers
    with pytest.raises(KubetuneError, match="holds another checkpoint mirror"):
        Mirror("s3://ckpt/runs", out, 1).check_access()
    Mirror("s3://ckpt/runs", out, 1, print).prune()  # had it been let in: its retention never touches runs/b
    assert sorted(k for k in objects(bucket) if k.endswith(MARKER)) == [f"runs/b/checkpoint-{n}/{MARKER}" for n in (1, 2, 3)]


def test_an_outage_that_ends_before_the_last_pass_fails_nothing_and_is_said_once_per_save(
    bucket, tmp_path, faulty_proxy, monkeypatch
):
    """The endpoint fails while checkpoint-1 uploads (two scans), then recovers; checkpoint-2 comes later. The last pass
    mirrors both and the step succeeds; an outage that lasts to the end fails it naming the save still unmarked."""
    import kubetune.checkpoint_mirror.remote as module

    monkeypatch.setattr(module, "ATTEMPTS", 1)
    down = {"on": True, "what": ""}
    proxy = faulty_proxy(lambda method, path: "fail" if down["on"] and down["what"] in path and method != "GET" else None)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    out, said = tmp_path / "out", []
    checkpoint(out, 1)
    mirror = Mirror(URI, out, 2, said.append)
    for _ in range(2):
        for future in mirror.scan():
            future.result()
    down["on"] = False
    checkpoint(out, 2)
    mirror.finish()
    assert sorted(k for k in objects(bucket) if k.endswith(MARKER)) == [f"runs/one/checkpoint-{n}/{MARKER}" for n in (1, 2)]
    assert [line.split(": ")[1] for line in said if "failed" in line] == [f"{URI}/checkpoint-1"], said  # once, not per scan

    down.update(on=True, what="checkpoint-3")
    checkpoint(out, 3)
    with pytest.raises(KubetuneError) as info:
        Mirror(URI, out, 2, said.append).finish()
    assert info.value.problems[0].where == f"{URI}/checkpoint-3", info.value.report()
    assert "(and" not in info.value.report()


def test_a_kill_at_every_get_of_a_restore_leaves_it_whole_or_noted_and_the_next_restore_completes_it(
    bucket, tmp_path, faulty_proxy, monkeypatch
):
    """The restoring process (a fork of this one) is SIGKILLed at its k-th GET, for every k: the output then holds
    the state with the model saves and metrics files before it, or no resumable state, or the note that a restore
    was under way (the state is placed last, then the note goes); evaluation and export never see a partial
    download; the next restore on that output ends with all of it."""
    import multiprocessing

    from kubetune.checkpoint_mirror import RESTORING
    from kubetune.checkpoints import find_checkpoints

    out = tmp_path / "out"
    for step in (1, 2):
        checkpoint(out, step)
    (out / "training_metrics_0.jsonl").write_text('{"step": 1}\n')
    mirror_all(out)
    state: dict = {"pid": None, "seen": 0, "at": 0}

    def kill(method: str, path: str) -> str | None:
        state["seen"] += method == "GET"  # a HEAD has a GET after it, with nothing written between
        if method == "GET" and state["seen"] == state["at"]:
            os.kill(state["pid"], signal.SIGKILL)
            return "drop"
        return None

    monkeypatch.setenv("AWS_ENDPOINT_URL", faulty_proxy(kill).url)
    whole = (["checkpoint-1", "checkpoint-2"], True)
    code, at, noted = None, 0, 0
    while code != 0:
        at += 1
        fresh = tmp_path / f"fresh-{at}"
        fresh.mkdir()
        state.update(seen=0, at=at)
        process = multiprocessing.get_context("fork").Process(target=Mirror(URI, fresh, 0, lambda line: None).restore,
                                                              args=("lora_sft",))  # fmt: skip
        process.start()
        state["pid"] = process.pid
        process.join(timeout=60)
        code = process.exitcode
        left = ([s.prefix for s in complete_saves(fresh)], (fresh / "training_metrics_0.jsonl").exists())
        assert left == whole or "checkpoint-2" not in left[0] and (not left[0] or (fresh / RESTORING).exists()), (at, left)
        assert not [p for p in find_checkpoints(fresh) if ".restore-tmp" in p.parts], at
        if not (fresh / RESTORING).exists():
            continue  # nothing there (a restore like the first) or all of it
        noted += 1
        lines: list[str] = []
        Mirror(URI, fresh, 0, lines.append).restore("lora_sft")
        assert ([s.prefix for s in complete_saves(fresh)], (fresh / "training_metrics_0.jsonl").exists()) == whole, (at, lines)
        assert not (fresh / ".restore-tmp").exists() and not (fresh / RESTORING).exists(), at
    assert at > 10 and noted > 5, (at, noted)  # every GET of the restore was a kill point


def test_a_file_uploaded_in_parts_is_hashed_as_sent(bucket, tmp_path):
    big = tmp_path / "model.safetensors"
    big.write_bytes(os.urandom(9 * 2**20))  # over boto3's 8 MiB multipart threshold: sent in parts, read once
    assert Mirror(URI, tmp_path).put(big, "x/model.safetensors") == hashlib.sha256(big.read_bytes()).hexdigest()
    assert objects(bucket)["runs/one/x/model.safetensors"] == big.read_bytes()


WORKER = """
import shutil, signal, sys, time
from pathlib import Path
def save(*_):  # the backend's SIGTERM save, then a clean exit
    shutil.copytree(sys.argv[1], Path(sys.argv[2]) / "checkpoint-1")
    sys.exit(0)
signal.signal(signal.SIGTERM, save)
(Path(sys.argv[2]) / "ready").write_text("ready")
while True:
    time.sleep(0.1)
"""
NODE = (
    "import os, sys; from pathlib import Path; from kubetune.checkpoint_mirror import mirrored; "
    "from kubetune.cluster.node import run_workers\n"
    "with mirrored(sys.argv[1], Path(sys.argv[2]), 'lora_sft', 0):\n"
    "    code = run_workers([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc-per-node=1', "
    "*sys.argv[3:], sys.argv[2]], dict(os.environ))\n"
    "sys.exit(code)"
)


def test_a_sigterm_to_a_trainjob_node_reaches_its_torchrun_workers_and_their_save_is_mirrored(bucket, tmp_path):
    """lora_sft's node 0 runs torchrun around its workers; the kubelet's SIGTERM to the node's process is forwarded to
    them, the node waits for their SIGTERM save to end, then the mirror's last pass marks it."""
    import time

    prepared, out = tmp_path / "prepared", tmp_path / "out"
    checkpoint(prepared, 1)
    out.mkdir()
    (tmp_path / "worker.py").write_text(WORKER)
    worker = [str(tmp_path / "worker.py"), str(prepared / "checkpoint-1")]
    node = subprocess.Popen([sys.executable, "-c", NODE, URI, str(out), *worker], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (out / "ready").exists() and node.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    node.send_signal(signal.SIGTERM)
    assert node.wait(timeout=120) == 1  # torchrun's exit code after a signal, once its workers have ended
    assert [s.prefix for s in complete_saves(out)] == ["checkpoint-1"]
    assert f"runs/one/checkpoint-1/{MARKER}" in objects(bucket)


def test_a_restore_refuses_another_runs_mirror_in_one_line_and_resumes_its_own_with_a_longer_max_steps(bucket, tmp_path):
    from kubetune.checkpoint_mirror import run_identity
    from kubetune.validation import validate_spec

    data, new_data = tmp_path / "data.jsonl", tmp_path / "new.jsonl"
    data.write_text('{"input_ids": [1, 2]}\n')
    new_data.write_text('{"input_ids": [1, 3]}\n')  # the same size: its content tells
    spec = validate_spec({"algorithm": "lora_sft", "max_steps": 2, "lora_r": 8}, require_paths=False)
    out = tmp_path / "out"
    checkpoint(out, 1)
    Mirror(URI, out, 0, run=run_identity(spec, "org/model", data)).finish()
    assert json.loads(objects(bucket)[f"runs/one/checkpoint-1/{MARKER}"])["run"]["base model"] == "org/model"
    others = {
        "training data": run_identity(spec, "org/model", new_data),
        "base model": run_identity(spec, "org/other", data),
        "spec": run_identity(validate_spec({"algorithm": "lora_sft", "max_steps": 2, "lora_r": 16}, require_paths=False),
                             "org/model", data),
    }  # fmt: skip
    for item, run in others.items():
        fresh = tmp_path / f"fresh-{item}"
        fresh.mkdir()
        with pytest.raises(KubetuneError) as info:
            Mirror(URI, fresh, 0, run=run).restore("lora_sft")
        assert len(info.value.problems) == 1 and info.value.problems[0].where == f"{URI}/checkpoint-1"
        assert info.value.problems[0].message.startswith(f"is another run's save: its {item} is "), info.value.report()
        assert "its own checkpoint_storage prefix" in info.value.report() and not (fresh / "checkpoint-1").exists()
    longer = validate_spec({"algorithm": "lora_sft", "max_steps": 9, "lora_r": 8}, require_paths=False)
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    assert Mirror(URI, fresh, 0, run=run_identity(longer, "org/model", data)).restore("lora_sft") == "checkpoint-1"


def test_a_save_written_again_under_its_name_replaces_its_mirror_whole_and_a_cut_replacement_is_pruned_whole(
    bucket, tmp_path, faulty_proxy, monkeypatch
):
    import numpy as np
    from safetensors.numpy import save_file

    import kubetune.checkpoint_mirror.remote as module

    out = tmp_path / "out"
    path = checkpoint(out, 1)
    (path / "extra.bin").write_bytes(b"only in the first save")
    mirror_all(out)
    (path / "extra.bin").unlink()
    save_file({"w": np.zeros(4, dtype=np.float32)}, str(path / "adapter_model.safetensors"))  # written again
    (path / "trainer_state.json").write_text(json.dumps({"global_step": 1}))  # the trainer state last, as TRL does
    mirror_all(out)
    stored = objects(bucket)
    assert "runs/one/checkpoint-1/extra.bin" not in stored
    assert stored["runs/one/checkpoint-1/adapter_model.safetensors"] == (path / "adapter_model.safetensors").read_bytes()

    (path / "extra.bin").write_bytes(b"in the third")
    (path / "trainer_state.json").write_text(json.dumps({"global_step": 1}))
    monkeypatch.setattr(module, "ATTEMPTS", 1)
    proxy = faulty_proxy(lambda method, path: "fail" if method == "PUT" and path.endswith("trainer_state.json") else None)
    moto = os.environ["AWS_ENDPOINT_URL"]
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    with pytest.raises(KubetuneError):  # cut short, as a kill would
        mirror_all(out)
    claim = json.loads(objects(bucket)[f"runs/one/checkpoint-1/{MARKER}"])
    assert claim["replacing"] and set(claim["files"]) == {p.name for p in path.iterdir()}
    fresh, lines = tmp_path / "fresh", []
    fresh.mkdir()
    assert Mirror(URI, fresh, 0, lines.append).restore("lora_sft") is None
    assert lines[0] == f"[kubetune] not restoring {URI}/checkpoint-1: its upload was replacing an older one and did not end"
    checkpoint(out, 2)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto)
    shutil.rmtree(path)
    Mirror(URI, out, 1).finish()  # retention 1: checkpoint-1 pruned, every file either upload wrote
    assert not [k for k in objects(bucket) if "checkpoint-1" in k]
