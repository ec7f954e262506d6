"""Export and publish under attack: foreign data at the destination, a failure of every S3 request, a
SIGKILL at every step of both publish protocols, file modes, and damaged exports given to ``verify``.

A reader (``verify``, or a server reading the files once ``manifest.json`` exists) must see the old
complete export, the new complete export, or an explicit "interrupted" state, never a manifest over
partial files; the next export run must recover and clean its staging. The model is a handful of small
files made by hand: the protocols do not care what the bytes are, and no test trains.

Killed runs are children of a small fork server (one Python process that imported kubetune and boto3
once, then forks one child per run), so each of the many kills costs a fork, not an interpreter start.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import save_file

from kubetune.errors import KubetuneError
from kubetune.steps.export import MANIFEST, check_destination, export, export_step, verify

HINT = "(choose an empty or new destination, or pass overwrite to replace what it holds)"
BUCKET_ROOT = "is a bucket root: an export needs a prefix of its own (s3://bucket/name)"
MUTATING = ("PUT", "POST", "DELETE")
STAGING = ".kubetune-staging/"


# --- a model made by hand ---------------------------------------------------------------------------


def make_model(root: Path, version: int) -> Path:
    """``root/v<version>/checkpoints/checkpoint-4``: weights, config, tokenizer, a nested folder, training
    state (left out of exports), and one file only this version has (so a re-export adds and drops one)."""
    model = root / f"v{version}" / "checkpoints" / "checkpoint-4"
    (model / "assets").mkdir(parents=True)
    (model / "config.json").write_text(json.dumps({"model_type": "llama", "version": version}))
    save_file({"w": np.full(4096, version, dtype=np.uint8)}, str(model / "model.safetensors"))  # a whole checkpoint
    (model / "tokenizer.json").write_text('{"model": {}}')
    (model / "assets" / "vocab.txt").write_text("a\nb\n")
    (model / f"only_v{version}.json").write_text("{}")
    (model / "optimizer.pt").write_bytes(b"training state")
    return model


def test_a_damaged_checkpoint_is_never_exported_and_final_takes_the_newest_complete_one(tmp_path, v1):
    trained = v1.parent.parent
    newer = trained / "checkpoints" / "checkpoint-8"
    shutil.copytree(v1, newer)
    (newer / "model.safetensors").write_bytes((newer / "model.safetensors").read_bytes()[:100])  # killed mid-save
    with pytest.raises(KubetuneError, match=r"checkpoint-8: is not a complete checkpoint: "):
        export_step(trained, "checkpoints/checkpoint-8", str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    assert export_step(trained, "", str(tmp_path / "out"), select="final").checkpoint == "checkpoints/checkpoint-4"
    assert verify(tmp_path / "out") == []


@pytest.fixture
def v1(tmp_path):
    return make_model(tmp_path, 1)


@pytest.fixture
def v2(tmp_path):
    return make_model(tmp_path, 2)


def tree(root: Path) -> dict[str, bytes | None]:
    """Everything under ``root`` (files with their bytes, folders and links as None): to compare before/after."""
    found: dict[str, bytes | None] = {}
    for top, folders, files in os.walk(root):
        for name in folders + files:
            path = Path(top, name)
            is_file = path.is_file() and not path.is_symlink()
            found[path.relative_to(root).as_posix()] = path.read_bytes() if is_file else None
    return found


def manifest_of(directory: Path) -> dict | None:
    path = directory / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


def local_reader_sees(destination: Path, old: dict | None, new: dict) -> str:
    """old / new (complete and verified) or interrupted / absent; never a manifest over partial files."""
    problems = verify(destination)
    manifest = manifest_of(destination)
    if manifest is None:
        assert len(problems) == 1 and "is missing" in problems[0], problems
        return "interrupted" if "was interrupted" in problems[0] else "absent"
    assert problems == [], problems  # a manifest is there: every file matches it, nothing else is there
    return {json.dumps(old): "old", json.dumps(new): "new"}.get(json.dumps(manifest), "other")


def leftovers(parent: Path) -> list[str]:
    """Staging and renamed-aside directories of exports to ``parent/m`` (not ``.m.old-notes``: a user's)."""
    ours = re.compile(r"\.export-staging-[0-9a-f]{8}-m|\.m\.old-[0-9a-f]{8}")
    return sorted(p.name for p in parent.iterdir() if ours.fullmatch(p.name))


# --- S3 helpers -------------------------------------------------------------------------------------


def bucket_objects(s3, bucket: str) -> dict[str, tuple[bytes, dict]]:
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    found = {}
    for key in keys:
        got = s3.get_object(Bucket=bucket, Key=key)
        found[key] = (got["Body"].read(), got.get("Metadata", {}))
    return found


def restore(s3, bucket: str, snapshot: dict[str, tuple[bytes, dict]]) -> None:
    for key in bucket_objects(s3, bucket):
        s3.delete_object(Bucket=bucket, Key=key)
    for key, (body, metadata) in snapshot.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body, Metadata=metadata)


def s3_reader_sees(s3, uri: str, old: dict | None, new: dict) -> str:
    """What a reader of ``uri`` sees (read from the S3 server directly, not through the faulty proxy)."""
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    problems = verify(uri)
    try:
        manifest = json.loads(s3.get_object(Bucket=bucket, Key=f"{prefix}/{MANIFEST}")["Body"].read())
    except s3.exceptions.NoSuchKey:
        assert len(problems) == 1 and "is missing" in problems[0], problems
        return "interrupted" if "was interrupted" in problems[0] else "absent"
    assert problems == [], problems  # never a manifest over partial, mismatched or extra objects
    return {json.dumps(old): "old", json.dumps(new): "new"}.get(json.dumps(manifest), "other")


def staging_keys(s3, bucket: str) -> list[str]:
    return [k for k in bucket_objects(s3, bucket) if STAGING in k]


@pytest.fixture(autouse=True)
def one_client_per_endpoint(monkeypatch):
    """Reuse one boto3 client per endpoint and retry setting in this process: creating one takes a tenth
    of a second, and the protocol tests make hundreds of exports and reads (all over real HTTP)."""
    import kubetune.s3
    from kubetune.steps import publish

    made = {}
    create = kubetune.s3.client

    def client():
        key = tuple(os.environ.get(n) for n in ("AWS_ENDPOINT_URL", "AWS_MAX_ATTEMPTS", "AWS_ACCESS_KEY_ID"))
        if key not in made:
            made[key] = create()
        return made[key]

    monkeypatch.setattr(kubetune.s3, "client", client)
    monkeypatch.setattr(publish, "client", client)
    monkeypatch.setattr("kubetune.steps.export.client", client)


@pytest.fixture
def via(monkeypatch, moto_endpoint):
    """``via(url)``: route boto3 through ``url`` (a proxy); ``via(None)``: straight to the S3 server."""

    def route(url: str | None) -> None:
        monkeypatch.setenv("AWS_ENDPOINT_URL", url or moto_endpoint)

    return route


# --- the fork server for killed runs ----------------------------------------------------------------

FORK_SERVER = r"""
import json, os, shutil, sys
import boto3.s3.transfer, botocore.session
from kubetune.steps import export as core
from kubetune.steps import publish

def run(job):
    os.environ.update(job.get("env", {}))
    steps = [0]
    def counting(function):
        def step(*args, **kwargs):
            steps[0] += 1
            if steps[0] == job.get("exit_at"):
                os._exit(99)  # killed here: no finally, no cleanup
            return function(*args, **kwargs)
        return step
    if "exit_at" in job:  # every filesystem mutation of a local export is a step
        for module, names in ((os, ("rename", "replace", "unlink", "rmdir", "mkdir")), (shutil, ("rmtree", "copy2"))):
            for name in names:
                setattr(module, name, counting(getattr(module, name)))
    try:
        core.export(job["source"], job["destination"])
    except Exception as error:
        Path = __import__("pathlib").Path
        Path(job["report"]).write_text(f"error: {error}")
        os._exit(1)
    with open(job["report"], "w") as report:
        report.write(str(steps[0]))
    os._exit(0)

for line in sys.stdin:
    job = json.loads(line)
    pid = os.fork()
    if pid == 0:
        run(job)
    print(pid, flush=True)
    print(os.waitpid(pid, 0)[1], flush=True)
"""


class ForkServer:
    def __init__(self):
        self.process = subprocess.Popen(
            [sys.executable, "-c", FORK_SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def start(self, **job) -> int:
        """Start an export in a new child; returns its pid."""
        self.process.stdin.write(json.dumps(job) + "\n")
        self.process.stdin.flush()
        return int(self.process.stdout.readline())

    def status(self) -> int:
        """The child's wait status, once it has ended."""
        return int(self.process.stdout.readline())

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def fork_server():
    server = ForkServer()
    yield server
    server.close()


def s3_env(url: str) -> dict[str, str]:
    names = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    return {"AWS_ENDPOINT_URL": url, "AWS_MAX_ATTEMPTS": "1", **{n: os.environ[n] for n in names}}


# --- 1. never delete what kubetune did not create ---------------------------------------------------


def user_files(d: Path, model: Path) -> str:
    (d / "prod").mkdir(parents=True)
    (d / "prod" / "w").write_text("x")
    (d / "INDEX.md").write_text("keep")
    return "holds 2 file(s) or folder(s) kubetune did not export (INDEX.md, prod)"


def nested_user_folder(d: Path, model: Path) -> str:
    (d / "a" / "b").mkdir(parents=True)
    (d / "a" / "b" / "c.txt").write_text("mine")
    return "holds 1 file(s) or folder(s) kubetune did not export (a)"


def export_plus_user_file(d: Path, model: Path) -> str:
    export(model, d)
    (d / "notes.txt").write_text("mine")
    (d / "assets" / "extra.txt").write_text("mine too")
    return "holds 2 file(s) or folder(s) kubetune did not export (assets/extra.txt, notes.txt)"


def invalid_manifest(d: Path, model: Path) -> str:
    d.mkdir()
    (d / MANIFEST).write_text('{"format": 1, "files": {')
    return "holds a manifest.json that is not a valid kubetune manifest"


def borrowed_manifest(d: Path, model: Path) -> str:
    """A manifest linked from a real export does not make a folder of user files an export."""
    export(model, d.parent / "real-export")
    d.mkdir()
    (d / "weights.bin").write_text("user data")
    (d / MANIFEST).symlink_to(d.parent / "real-export" / MANIFEST)
    return "holds a manifest.json that is not a valid kubetune manifest"


def a_file(d: Path, model: Path) -> str:
    d.write_text("a user's file")
    return "is a file, not a directory"


def link_to_user_folder(d: Path, model: Path) -> str:
    (d.parent / "real").mkdir()
    (d.parent / "real" / "INDEX.md").write_text("keep")
    d.symlink_to(d.parent / "real")
    return "holds 1 file(s) or folder(s) kubetune did not export (INDEX.md)"


FOREIGN = [
    user_files,
    nested_user_folder,
    export_plus_user_file,
    invalid_manifest,
    borrowed_manifest,
    a_file,
    link_to_user_folder,
]


@pytest.mark.parametrize("setup", FOREIGN, ids=[f.__name__ for f in FOREIGN])
def test_local_destination_with_foreign_data_is_refused_and_left_as_it_was(tmp_path, v1, setup):
    destination = tmp_path / "m"
    message = setup(destination, v1)
    before = tree(tmp_path)
    expected = f"{destination}: {message} {HINT}"
    for attempt in (lambda: check_destination(str(destination)), lambda: export(v1, destination)):
        with pytest.raises(KubetuneError) as refused:
            attempt()
        assert [str(p) for p in refused.value.problems] == [expected] and refused.value.title == "cannot export"
    assert tree(tmp_path) == before  # not a byte moved


@pytest.mark.parametrize("setup", FOREIGN, ids=[f.__name__ for f in FOREIGN])
def test_overwrite_replaces_foreign_data_with_exactly_the_export(tmp_path, v1, setup):
    destination = tmp_path / "m"
    setup(destination, v1)
    result = export(v1, destination, overwrite=True)
    assert verify(destination) == [] and manifest_of(destination) == result.manifest
    assert set(tree(destination)) == set(result.manifest["files"]) | {MANIFEST, "assets"}
    assert leftovers(tmp_path) == []


def test_the_issue_example_refused_then_a_kubetune_export_replaced_without_overwrite(tmp_path, v1, v2):
    destination = tmp_path / "m"
    user_files(destination, v1)
    with pytest.raises(KubetuneError, match=r"m: holds 2 file\(s\) or folder\(s\) kubetune did not export \(INDEX.md, prod\)"):
        export(v1, destination)
    assert (destination / "prod" / "w").read_text() == "x" and (destination / "INDEX.md").read_text() == "keep"
    empty = tmp_path / "empty"
    empty.mkdir()
    export(v1, empty)  # an empty folder is fine
    second = export(v2, empty)  # and so is a kubetune export
    assert verify(empty) == [] and manifest_of(empty) == second.manifest and leftovers(tmp_path) == []


def test_links_named_like_staging_are_cleaned_without_touching_their_targets(tmp_path, v1, v2):
    user = tmp_path / "user"
    user.mkdir()
    (user / "precious.txt").write_text("keep")
    parent = tmp_path / "out"
    parent.mkdir()
    export(v1, parent / "m")
    (parent / ".export-staging-deadbeef-m").symlink_to(user)
    (parent / ".m.old-deadbeef").symlink_to(user)
    export(v2, parent / "m")
    assert tree(user) == {"precious.txt": b"keep"} and leftovers(parent) == [] and verify(parent / "m") == []
    shutil.rmtree(parent / "m")  # the destination is gone, a link named like its renamed-aside export is there
    (parent / ".m.old-deadbeef").symlink_to(user)
    export(v2, parent / "m")
    assert tree(user) == {"precious.txt": b"keep"} and leftovers(parent) == [] and verify(parent / "m") == []


def relations(tmp_path: Path, v1: Path) -> list[tuple[Path, str]]:
    checkpoints = v1.parent
    (tmp_path / "link-to-checkpoints").symlink_to(checkpoints)
    (tmp_path / "link-to-model").symlink_to(v1)
    contains = f"contains the checkpoint being exported ({v1}): exporting there would delete it"
    inside = f"is inside the checkpoint being exported ({v1})"
    return [
        (checkpoints, contains),  # checkpoints/checkpoint-4 -> checkpoints
        (checkpoints.parent, contains),
        (v1 / ".." / "..", contains),
        (tmp_path / "link-to-checkpoints", contains),
        (v1, inside),
        (v1 / "export", inside),
        (tmp_path / "link-to-model" / "out", inside),
    ]


@pytest.mark.parametrize("overwrite", [False, True])
def test_destination_containing_or_inside_the_source_is_refused_even_with_overwrite(tmp_path, v1, overwrite):
    for destination, message in relations(tmp_path, v1):
        before = tree(tmp_path)
        with pytest.raises(KubetuneError) as refused:
            export(v1, destination, overwrite=overwrite)
        assert [str(p) for p in refused.value.problems] == [f"{destination}: {message}"]
        assert tree(tmp_path) == before


def test_export_step_refuses_before_fetching_anything(tmp_path, v1):
    trained = v1.parent.parent
    with pytest.raises(KubetuneError, match=r"contains the checkpoint being exported"):
        export_step(trained, "checkpoints/checkpoint-4", str(v1.parent), base_model_uri="hf://never/fetched")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("x")
    with pytest.raises(KubetuneError, match=r"out: holds 1 file\(s\) .*\(mine.txt\)"):
        export_step(trained, "checkpoints/checkpoint-4", str(tmp_path / "out"), base_model_uri="hf://never/fetched")
    export_step(trained, "checkpoints/checkpoint-4", str(tmp_path / "out"), overwrite=True)
    assert verify(tmp_path / "out") == []


@pytest.mark.parametrize("uri", ["s3://bkt", "s3://bkt/", "s3://bkt//"])
@pytest.mark.parametrize("overwrite", [False, True])
def test_bucket_root_is_refused_always_and_nothing_changes(s3, v1, uri, overwrite):
    s3.create_bucket(Bucket="bkt")
    s3.put_object(Bucket="bkt", Key="other/model.bin", Body=b"someone's")
    before = bucket_objects(s3, "bkt")
    with pytest.raises(KubetuneError) as refused:
        export(v1, uri, overwrite=overwrite)
    assert [str(p) for p in refused.value.problems] == [f"{uri}: {BUCKET_ROOT}"]
    assert bucket_objects(s3, "bkt") == before


def test_parent_prefix_and_user_objects_are_refused_and_overwrite_replaces_them(s3, v1, v2):
    s3.create_bucket(Bucket="bkt")
    export(v1, "s3://bkt/models/chat/v1")
    s3.put_object(Bucket="bkt", Key="models/readme.txt", Body=b"team notes")
    before = bucket_objects(s3, "bkt")
    with pytest.raises(KubetuneError) as refused:
        export(v2, "s3://bkt/models")
    others = sorted(k[len("models/") :] for k in before)
    shown = ", ".join(others[:5]) + ", ..."
    expected = f"s3://bkt/models: holds {len(others)} file(s) or folder(s) kubetune did not export ({shown}) {HINT}"
    assert [str(p) for p in refused.value.problems] == [expected]
    assert bucket_objects(s3, "bkt") == before
    s3.put_object(Bucket="bkt", Key="models/chat/v1/mine.txt", Body=b"x")  # a user object inside an export
    with pytest.raises(KubetuneError, match=r"s3://bkt/models/chat/v1: holds 1 file\(s\) .*\(mine.txt\)"):
        export(v2, "s3://bkt/models/chat/v1")
    assert verify("s3://bkt/models/chat/v1") == ["s3://bkt/models/chat/v1/mine.txt is not in the manifest"]
    result = export(v2, "s3://bkt/models/chat/v1", overwrite=True)
    keys = {k for k in bucket_objects(s3, "bkt") if k.startswith("models/chat/v1/")}
    assert keys == {f"models/chat/v1/{n}" for n in [*result.manifest["files"], MANIFEST]}
    assert verify("s3://bkt/models/chat/v1") == [] and "models/readme.txt" in bucket_objects(s3, "bkt")


def test_a_failed_overwrite_puts_the_users_objects_back(s3, v1, faulty_proxy, via, monkeypatch):
    s3.create_bucket(Bucket="bkt")
    s3.put_object(Bucket="bkt", Key="m/config.json", Body=b"the user's config")
    s3.put_object(Bucket="bkt", Key="m/other.bin", Body=b"the user's weights")
    before = bucket_objects(s3, "bkt")
    via(faulty_proxy(lambda method, path: "fail" if method == "PUT" and path.endswith(f"/m/{MANIFEST}") else None).url)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # one attempt in all: no retry
    with pytest.raises(KubetuneError, match=r"s3://bkt/m: rolled back: the destination holds what it held before"):
        export(v1, "s3://bkt/m", overwrite=True)
    via(None)
    assert bucket_objects(s3, "bkt") == before


# --- 2. complete or visibly absent: S3 ---------------------------------------------------------------


@pytest.fixture
def s3_exports(s3, v1, v2):
    """The bucket holding v1's export at s3://bkt/m, its snapshot, and both versions' manifests."""
    s3.create_bucket(Bucket="bkt")
    new = export(v2, "s3://bkt/scratch").manifest
    for key in bucket_objects(s3, "bkt"):
        s3.delete_object(Bucket="bkt", Key=key)
    old = export(v1, "s3://bkt/m").manifest
    return bucket_objects(s3, "bkt"), old, new


def test_s3_reexport_survives_a_failure_of_every_request(s3, v2, s3_exports, faulty_proxy, via, monkeypatch):
    snapshot, old, new = s3_exports
    proxy = faulty_proxy(lambda method, path: None)
    via(proxy.url)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # no retry: boto3 would retry a 503 away
    export(v2, "s3://bkt/m")
    protocol = [(method, path) for method, path, _ in proxy.requests]
    assert len(protocol) >= 25 and {m for m, _ in protocol} == {"HEAD", "GET", "PUT", "DELETE", "POST"}
    rolled_back = []
    for k in range(1, len(protocol) + 1):
        via(None)
        restore(s3, "bkt", snapshot)
        count = {"n": 0}

        def fail_request_k(method, path, k=k, count=count):
            count["n"] += 1
            return "fail" if count["n"] == k else None

        proxy.fault = fail_request_k
        via(proxy.url)
        try:
            export(v2, "s3://bkt/m")
            outcome = None
        except KubetuneError as error:
            outcome = error
        via(None)
        seen = s3_reader_sees(s3, "s3://bkt/m", old, new)
        if outcome is None:  # the one failure was the best-effort clean-up, or boto3 was told to go on
            assert seen == "new", (k, protocol[k - 1])
            continue
        assert seen == "old", (k, protocol[k - 1], outcome.report())  # rolled back at once
        rolled_back.append(protocol[k - 1])
        assert str(outcome.problems[0]).startswith("s3://bkt") and "Traceback" not in outcome.report()
        assert staging_keys(s3, "bkt") == [], (k, protocol[k - 1])
    # every request but the final clean-up fails the export, those after the manifest's deletion included
    assert rolled_back == protocol[:-1] and protocol[-1][0] == "POST"
    assert ("DELETE", f"/bkt/m/{MANIFEST}") in rolled_back


@pytest.mark.parametrize(
    "where",
    ["journal", "delete-manifest", "copy-into-place", "final-manifest"],
)
def test_s3_gone_mid_reexport_leaves_an_explicit_incomplete_state_the_next_run_rolls_back(
    s3, v2, s3_exports, faulty_proxy, via, monkeypatch, where
):
    snapshot, old, new = s3_exports
    matches = {
        "journal": lambda m, p: m == "PUT" and p.endswith("/journal.json"),
        "delete-manifest": lambda m, p: m == "DELETE" and p.endswith(f"/m/{MANIFEST}"),
        "copy-into-place": lambda m, p: m == "PUT" and "/m/" in p and STAGING not in p and not p.endswith(MANIFEST),
        "final-manifest": lambda m, p: m == "PUT" and p.endswith(f"/m/{MANIFEST}"),
    }[where]
    gone = {"from": False}

    def s3_goes_away(method, path):
        gone["from"] = gone["from"] or matches(method, path)
        return "fail" if gone["from"] else None

    via(faulty_proxy(s3_goes_away).url)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(KubetuneError) as failed:
        export(v2, "s3://bkt/m")
    via(None)
    seen = s3_reader_sees(s3, "s3://bkt/m", old, new)
    assert seen == ("old" if where in ("journal", "delete-manifest") else "interrupted")
    if where != "journal":
        assert str(failed.value.problems[-1]) == (
            "s3://bkt/m: could not roll back: the destination holds what it held before or is marked incomplete; "
            "the next export to it restores what it held before"
        )
    if seen == "interrupted":
        assert verify("s3://bkt/m")[0].startswith("s3://bkt/m/manifest.json is missing: an export run (")
        check_destination("s3://bkt/m")  # an interrupted kubetune export is not foreign data
    export(v2, "s3://bkt/m")
    assert s3_reader_sees(s3, "s3://bkt/m", old, new) == "new" and staging_keys(s3, "bkt") == []


def kill_at_every_mutation(s3, fork_server, proxy, source: Path, uri: str, setup, check) -> int:
    """For k = 1..N (N: the mutating requests of a clean run), hold the k-th mutating request (and every
    request after it) at the proxy, SIGKILL the exporting process, then ``check()``."""
    requests = {"n": 0}
    proxy.fault = lambda method, path: requests.__setitem__("n", requests["n"] + (method in MUTATING))
    setup()
    fork_server.start(source=str(source), destination=uri, env=s3_env(proxy.url), report=os.devnull)
    assert os.waitstatus_to_exitcode(fork_server.status()) == 0
    total, lock = requests["n"], threading.Lock()
    for k in range(1, total + 1):
        setup()
        reached, release = threading.Event(), threading.Event()
        count = {"n": 0}

        def hold_from_k(method, path, k=k, count=count, reached=reached, release=release):
            with lock:
                count["n"] += method in MUTATING
                held = count["n"] >= k
            if held:  # this request never reaches S3: the process dies while waiting for it
                reached.set()
                release.wait(30)
                return "drop"
            return None

        proxy.fault = hold_from_k
        pid = fork_server.start(source=str(source), destination=uri, env=s3_env(proxy.url), report=os.devnull)
        assert reached.wait(30), k
        os.kill(pid, signal.SIGKILL)
        status = fork_server.status()
        release.set()
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        check(k)
    return total


def test_s3_reexport_killed_at_every_step_is_old_or_new_or_marked_and_the_next_run_recovers(
    s3, v2, s3_exports, faulty_proxy, fork_server
):
    snapshot, old, new = s3_exports
    seen_states = set()

    def check(k):
        seen = s3_reader_sees(s3, "s3://bkt/m", old, new)
        assert seen in ("old", "new", "interrupted"), (k, seen)
        seen_states.add(seen)
        assert export(v2, "s3://bkt/m").manifest == new  # the next run recovers, then exports
        assert s3_reader_sees(s3, "s3://bkt/m", old, new) == "new" and staging_keys(s3, "bkt") == []

    proxy = faulty_proxy(lambda method, path: None)
    total = kill_at_every_mutation(s3, fork_server, proxy, v2, "s3://bkt/m", lambda: restore(s3, "bkt", snapshot), check)
    assert total >= 10 and seen_states == {"old", "interrupted", "new"}


def test_s3_first_export_killed_at_every_step_is_absent_or_marked_or_complete(s3, v1, faulty_proxy, fork_server):
    s3.create_bucket(Bucket="bkt")
    s3.put_object(Bucket="bkt", Key="elsewhere/keep.txt", Body=b"not under the prefix")
    new = export(v1, "s3://bkt/scratch").manifest
    seen_states = set()

    def empty_prefix():
        for key in bucket_objects(s3, "bkt"):
            if key.startswith("m/"):
                s3.delete_object(Bucket="bkt", Key=key)

    def check(k):
        seen = s3_reader_sees(s3, "s3://bkt/m", None, new)
        assert seen in ("absent", "interrupted", "new"), (k, seen)
        seen_states.add(seen)
        check_destination("s3://bkt/m")  # what a killed run wrote is not foreign data
        export(v1, "s3://bkt/m")
        assert s3_reader_sees(s3, "s3://bkt/m", None, new) == "new" and staging_keys(s3, "bkt") == []
        assert bucket_objects(s3, "bkt")["elsewhere/keep.txt"][0] == b"not under the prefix"

    kill_at_every_mutation(s3, fork_server, faulty_proxy(lambda m, p: None), v1, "s3://bkt/m", empty_prefix, check)
    assert seen_states == {"absent", "interrupted", "new"}


def test_s3_rerun_of_the_same_export_sends_no_write_at_all(s3, v1, s3_exports, faulty_proxy, via):
    proxy = faulty_proxy(lambda method, path: None)
    via(proxy.url)
    result = export(v1, "s3://bkt/m")
    assert result.skipped_files == len(result.manifest["files"])
    assert [r for r in proxy.requests if r[0] in MUTATING] == []


# --- 2. complete or visibly absent: local ------------------------------------------------------------


@pytest.mark.parametrize("first", [True, False], ids=["first-export", "re-export"])
def test_local_export_killed_at_every_filesystem_step(tmp_path, v1, v2, fork_server, first):
    parent = tmp_path / "out"
    parent.mkdir()
    (parent / "notes.txt").write_text("a user's file beside the export")
    (parent / ".m.old-notes").write_text("looks like ours, is not")
    destination = parent / "m"
    scratch = export(v2, tmp_path / "scratch").manifest
    old = None if first else export(v1, destination).manifest
    pristine = tree(parent)
    report = tmp_path / "report"
    fork_server.start(source=str(v2), destination=str(destination), exit_at=0, report=str(report))
    assert os.waitstatus_to_exitcode(fork_server.status()) == 0
    steps = int(report.read_text())
    assert steps >= (5 if first else 10)
    seen_states = set()
    for k in range(1, steps + 1):
        for path in parent.iterdir():
            if path.name == "m" or path.name in leftovers(parent):
                shutil.rmtree(path)
        if old is not None:
            export(v1, destination)
        fork_server.start(source=str(v2), destination=str(destination), exit_at=k, report=str(report))
        assert os.waitstatus_to_exitcode(fork_server.status()) == 99, k
        seen = local_reader_sees(destination, old, scratch)
        allowed = ("absent", "new") if first else ("old", "interrupted", "new")
        assert seen in allowed, (k, seen)
        seen_states.add(seen)
        assert export(v2, destination).manifest == scratch  # the next run recovers, then exports
        assert local_reader_sees(destination, old, scratch) == "new" and leftovers(parent) == []
        assert {k: v for k, v in tree(parent).items() if not k.startswith("m")} == {
            k: v for k, v in pristine.items() if not k.startswith("m")
        }  # nothing else beside the export was touched
    assert seen_states == ({"absent"} if first else {"old", "interrupted", "new"})  # a first export has no old to delete


def test_local_failure_while_staging_or_renaming_keeps_the_old_export(tmp_path, v1, v2, monkeypatch):
    destination = tmp_path / "m"
    old = export(v1, destination).manifest
    real_copy = shutil.copy2

    def disk_full(source, target, **kwargs):
        if str(source).endswith("model.safetensors"):
            raise OSError(28, "No space left on device", str(target))
        return real_copy(source, target, **kwargs)

    monkeypatch.setattr(shutil, "copy2", disk_full)
    with pytest.raises(KubetuneError) as failed:
        export(v2, destination)
    assert str(failed.value.problems[0]).endswith("model.safetensors: could not be written or read: No space left on device")
    monkeypatch.undo()
    assert local_reader_sees(destination, old, {}) == "old" and leftovers(tmp_path) == []

    real_rename = os.rename

    def second_rename_fails(source, target):
        if Path(source).name.startswith(".export-staging-"):
            raise OSError(5, "Input/output error", str(source))
        return real_rename(source, target)

    monkeypatch.setattr(os, "rename", second_rename_fails)
    with pytest.raises(KubetuneError, match="could not be written or read: Input/output error"):
        export(v2, destination)
    monkeypatch.undo()
    assert local_reader_sees(destination, old, {}) == "old" and leftovers(tmp_path) == []


# --- 8. files a serving pod can read ----------------------------------------------------------------


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_exported_files_and_folders_follow_the_umask(tmp_path, v1, mask):
    for path in [v1, *v1.rglob("*")]:
        path.chmod(0o700 if path.is_dir() else 0o600)  # a checkpoint written privately
    previous = os.umask(mask)
    try:
        export(v1, tmp_path / "m")
    finally:
        os.umask(previous)
    destination = tmp_path / "m"
    modes = {p.relative_to(tmp_path).as_posix(): p.stat().st_mode & 0o777 for p in [destination, *destination.rglob("*")]}
    assert modes["m"] == 0o777 & ~mask and modes["m/assets"] == 0o777 & ~mask
    assert {m for name, m in modes.items() if name not in ("m", "m/assets")} == {0o666 & ~mask}


# --- verify: what a reader is told -------------------------------------------------------------------


def truncated(d: Path) -> None:
    text = (d / MANIFEST).read_text()
    (d / MANIFEST).write_text(text[: len(text) // 2])


def damage(name: str, d: Path) -> None:
    {
        "truncated": truncated,
        "not-json": lambda d: (d / MANIFEST).write_text("hello"),
        "not-a-manifest": lambda d: (d / MANIFEST).write_text("[1, 2]"),
        "binary": lambda d: (d / MANIFEST).write_bytes(b"\xff\xfe\x00"),
        "escaping-path": lambda d: (d / MANIFEST).write_text(
            json.dumps({"format": 1, "files": {"../outside": {"sha256": "0" * 64, "bytes": 1}}})
        ),
        "extra-file": lambda d: (d / "notes.txt").write_text("x"),
        "extra-folder": lambda d: (d / "sub" / "deep").mkdir(parents=True),
        "missing-file": lambda d: (d / "config.json").unlink(),
        "tampered-file": lambda d: (d / "model.safetensors").write_bytes(b"\0" * 4096),
        "manifest-gone": lambda d: (d / MANIFEST).unlink(),
    }[name](d)


VERIFY = {
    "truncated": "manifest.json is not a valid manifest: truncated or not JSON: ",
    "not-json": "manifest.json is not a valid manifest: truncated or not JSON: Expecting value at line 1 column 1",
    "not-a-manifest": 'manifest.json is not a valid manifest: not a kubetune manifest (expected {"format": 1, "files": {...}})',
    "binary": "manifest.json is not a valid manifest: ",
    "escaping-path": "manifest.json is not a valid manifest: lists '../outside', which is not a path inside the export",
    "extra-file": "notes.txt is not in the manifest",
    "extra-folder": "sub is not in the manifest",
    "missing-file": "config.json is missing",
    "tampered-file": "model.safetensors does not match its checksum",
    "manifest-gone": "manifest.json is missing: the export is incomplete",
}


@pytest.mark.parametrize("name", list(VERIFY))
def test_verify_reports_each_damage_in_one_line(tmp_path, v1, name):
    export(v1, tmp_path / "m")
    damage(name, tmp_path / "m")
    problems = verify(tmp_path / "m")
    assert len(problems) == 1
    expected = VERIFY[name]
    if expected.startswith("manifest.json"):
        expected = f"{tmp_path / 'm'}/{expected}"
    assert problems[0].startswith(expected) if expected.endswith(": ") else problems[0] == expected


@pytest.mark.parametrize("name", ["truncated", "not-a-manifest", "extra-file", "missing-file", "tampered-file"])
def test_verify_s3_reports_each_damage_in_one_line(s3, v1, name):
    s3.create_bucket(Bucket="bkt")
    export(v1, "s3://bkt/m")
    body = s3.get_object(Bucket="bkt", Key=f"m/{MANIFEST}")["Body"].read()
    change = {
        "truncated": lambda: s3.put_object(Bucket="bkt", Key=f"m/{MANIFEST}", Body=body[: len(body) // 2]),
        "not-a-manifest": lambda: s3.put_object(Bucket="bkt", Key=f"m/{MANIFEST}", Body=b"{}"),
        "extra-file": lambda: s3.put_object(Bucket="bkt", Key="m/notes.txt", Body=b"x"),
        "missing-file": lambda: s3.delete_object(Bucket="bkt", Key="m/config.json"),
        "tampered-file": lambda: s3.put_object(Bucket="bkt", Key="m/model.safetensors", Body=b"\0" * 4096),
    }
    change[name]()
    expected = {
        "truncated": "s3://bkt/m/manifest.json is not a valid manifest: truncated or not JSON: ",
        "not-a-manifest": "s3://bkt/m/manifest.json is not a valid manifest: not a kubetune manifest",
        "extra-file": "s3://bkt/m/notes.txt is not in the manifest",
        "missing-file": "s3://bkt/m/config.json is missing",
        "tampered-file": "s3://bkt/m/model.safetensors does not match its checksum",
    }[name]
    problems = verify("s3://bkt/m")
    assert len(problems) == 1 and problems[0].startswith(expected), problems


def test_verify_s3_of_a_missing_bucket_or_an_interrupted_export_says_so(s3):
    assert verify("s3://nobucket/m") == ["s3://nobucket/m: the bucket does not exist"]
    s3.create_bucket(Bucket="bkt")
    journal = {"run": "0badc0de", "old": None, "writes": ["config.json"], "existed": []}
    s3.put_object(Bucket="bkt", Key="m/.kubetune-staging/0badc0de/journal.json", Body=json.dumps(journal).encode())
    s3.put_object(Bucket="bkt", Key="m/config.json", Body=b"{}")
    assert verify("s3://bkt/m") == [
        "s3://bkt/m/manifest.json is missing: an export run (0badc0de) was interrupted; "
        "the next export to s3://bkt/m restores the previous export"
    ]
    check_destination("s3://bkt/m")  # what the interrupted run wrote is kubetune's


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    content=st.one_of(
        st.binary(max_size=200),
        st.recursive(
            st.none() | st.integers() | st.text(max_size=5),
            lambda c: st.lists(c) | st.dictionaries(st.text(max_size=5), c),
            max_leaves=10,
        ).map(lambda v: json.dumps({"format": 1, "files": v}).encode()),
    )
)
def test_verify_never_raises_whatever_the_manifest_holds(tmp_path, content):
    (tmp_path / "m").mkdir(exist_ok=True)
    (tmp_path / "m" / MANIFEST).write_bytes(content)
    problems = verify(tmp_path / "m")
    assert isinstance(problems, list) and all(isinstance(p, str) and "\n" not in p for p in problems)


# --- the component and the pipeline parameter ----------------------------------------------------------


class Artifact:
    def __init__(self, path: Path):
        self.path, self.metadata, self.metrics = str(path), {}, {}

    def log_metric(self, name, value):
        self.metrics[name] = value


def test_export_component_refuses_foreign_data_with_exit_2_and_replaces_it_with_overwrite(tmp_path, v1, capsys):
    from kubetune.components.export.component import export_model

    destination = tmp_path / "m"
    user_files(destination, v1)
    before = tree(destination)
    step = {
        "trained_model": Artifact(v1.parent.parent),
        "checkpoint": "checkpoints/checkpoint-4",
        "export_destination": str(destination),
    }
    with pytest.raises(SystemExit) as stopped:
        export_model.python_func(exported_model=Artifact(tmp_path / "a"), metrics=Artifact(tmp_path / "x"), **step)
    assert stopped.value.code == 2 and tree(destination) == before
    assert (
        f"  - {destination}: holds 2 file(s) or folder(s) kubetune did not export (INDEX.md, prod) {HINT}"
        in capsys.readouterr().err
    )
    pointer = Artifact(tmp_path / "pointer")
    export_model.python_func(exported_model=pointer, metrics=Artifact(tmp_path / "x"), export_overwrite=True, **step)
    assert verify(destination) == [] and pointer.metadata["uri"] == str(destination)


# --- the pipeline parameter reaches the step ----------------------------------------------------------


def test_export_overwrite_is_a_pipeline_parameter_wired_to_the_export_step(tmp_path):
    from kfp import compiler

    from kubetune.pipelines.evaluate_export import evaluate_export
    from kubetune.pipelines.finetune import finetune

    for pipeline in (finetune, evaluate_export):
        compiler.Compiler().compile(pipeline, str(tmp_path / "p.yaml"))
        text = (tmp_path / "p.yaml").read_text()
        # inside the promotion gate's dsl.If the parameter reaches the export task as a pipeline channel
        assert re.search(r"\n +export_overwrite:\n +componentInputParameter: (pipelinechannel--)?export_overwrite\n", text)
        assert re.search(r"\n +export_overwrite:\n +defaultValue: false\n", text)


# --- round 2: places an export must never replace; a manifest that lists a folder --------------------


def _places(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """destination -> the refusal's message; the working directory is tmp/c1, HOME is tmp/home."""
    cwd, home = tmp_path / "c1", tmp_path / "home"
    data = cwd / "mydata.jsonl"
    whole, deletes = "an export replaces its destination whole", "exporting there would delete it"
    return {
        "cwd": (".", f"is the working directory ({cwd}): {whole}"),
        "parent of cwd": ("..", f"contains the working directory ({cwd}): exporting there would delete it"),
        "home": (str(home), f"is the home directory ({home}): {whole}"),
        "root": ("/", "is a filesystem root: an export needs a directory of its own"),
        "/usr": ("/usr", "is the system folder /usr: export to a folder of its own inside it"),
        "/etc": ("/etc/", "is the system folder /etc: export to a folder of its own inside it"),
        "an input": (str(data), f"is --data ({data}): {whole}"),
        "holds an input": (str(tmp_path / "inputs"), f"contains --kwargs ({tmp_path}/inputs/kw.json): {deletes}"),
        "inside an input": (str(tmp_path / "run" / "out"), f"is inside the run folder -o ({tmp_path}/run)"),
        "under /proc": ("/proc/model", "is under /proc, where no export can be written"),
        "under /sys": ("/sys/model", "is under /sys, where no export can be written"),
        "parent is a file": ("notes.txt/sub", f"cannot be created: {cwd}/notes.txt is not a directory"),
        "file://": ("file:///tmp/x", "file:// is not an export destination: give a directory or s3://bucket/prefix"),
        "hf://": ("hf://org/model", "hf:// is not an export destination: give a directory or s3://bucket/prefix"),
        "gs://": ("gs://bkt/model", "gs:// is not an export destination: give a directory or s3://bucket/prefix"),
        "dangling link": ("dangling", f"is a symbolic link to {tmp_path}/nowhere, which does not exist"),
    }


@pytest.mark.parametrize("overwrite", [False, True])
@pytest.mark.parametrize("case", list(_places(Path("/t"))))
def test_cwd_home_system_folders_and_inputs_are_refused_even_with_overwrite(tmp_path, v1, monkeypatch, case, overwrite):
    cwd = tmp_path / "c1"
    (cwd / "src").mkdir(parents=True)
    (cwd / "notes.txt").write_text("mine")
    (cwd / "mydata.jsonl").write_text("{}\n")
    (cwd / "src" / "main.py").write_text("print()")
    (tmp_path / "home").mkdir()
    (tmp_path / "inputs").mkdir()
    (tmp_path / "inputs" / "kw.json").write_text("{}")
    (tmp_path / "run").mkdir()
    (cwd / "dangling").symlink_to(tmp_path / "nowhere")
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    destination, message = _places(tmp_path)[case]
    protect = {"--data": Path("mydata.jsonl"), "--kwargs": tmp_path / "inputs" / "kw.json", "the run folder -o": tmp_path / "run"}
    before = tree(tmp_path)
    with pytest.raises(KubetuneError) as refused:
        check_destination(destination, overwrite, protect=protect)
    assert [str(p) for p in refused.value.problems] == [f"{destination}: {message}"]
    if case in ("cwd", "home", "parent is a file", "dangling link"):  # the export itself refuses too
        with pytest.raises(KubetuneError) as refused:
            export(v1, destination, overwrite=overwrite)
        assert [str(p) for p in refused.value.problems] == [f"{destination}: {message}"]
    assert tree(tmp_path) == before  # the user's files and the data are all there


def _listed_folder(d: Path) -> str:
    (d / "d").mkdir()
    (d / "d" / "precious.txt").write_text("precious")
    return "a folder"


def _listed_link(d: Path) -> str:
    (d.parent / "elsewhere.txt").write_text("precious")
    (d / "d").symlink_to(d.parent / "elsewhere.txt")
    return "a symbolic link"


def _listed_fifo(d: Path) -> str:
    os.mkfifo(d / "d")
    return "a special file"


@pytest.mark.parametrize("make", [_listed_folder, _listed_link, _listed_fifo], ids=["folder", "link", "fifo"])
def test_a_hand_made_manifest_listing_a_non_file_is_not_a_kubetune_export(tmp_path, v1, make):
    destination = tmp_path / "m7"
    destination.mkdir()
    entry = {"sha256": "a" * 64, "bytes": 0}
    (destination / MANIFEST).write_text(json.dumps({"format": 1, "files": {"d": entry}}))
    kind = make(destination)
    before = tree(tmp_path)
    expected = f"{destination}: is not a kubetune export: its manifest.json lists d, which is {kind}, not a file {HINT}"
    for attempt in (lambda: check_destination(str(destination)), lambda: export(v1, destination)):
        with pytest.raises(KubetuneError) as refused:
            attempt()
        assert [str(p) for p in refused.value.problems] == [expected]
    assert tree(tmp_path) == before
    inside = ["d/precious.txt is not in the manifest"] if kind == "a folder" else []
    assert verify(destination) == [f"d is {kind}, not a file", *inside]


@pytest.mark.parametrize("name", ["d/", "./d", "d//x", "."])
def test_a_manifest_name_that_is_not_a_plain_relative_path_is_invalid(tmp_path, name):
    destination = tmp_path / "m"
    (destination / "d").mkdir(parents=True)
    (destination / "d" / "precious.txt").write_text("precious")
    (destination / MANIFEST).write_text(json.dumps({"format": 1, "files": {name: {"sha256": "a" * 64, "bytes": 0}}}))
    with pytest.raises(KubetuneError) as refused:
        check_destination(str(destination))
    invalid = f"{destination}: holds a manifest.json that is not a valid kubetune manifest {HINT}"
    assert [str(p) for p in refused.value.problems] == [invalid]
    outside = f"lists {name!r}, which is not a path inside the export"
    assert verify(destination) == [f"{destination}/manifest.json is not a valid manifest: {outside}"]


def test_s3_a_manifest_listing_a_folder_name_does_not_cover_the_objects_under_it(s3, v1):
    s3.create_bucket(Bucket="bkt")
    manifest = {"format": 1, "files": {"d": {"sha256": "a" * 64, "bytes": 0}}}
    s3.put_object(Bucket="bkt", Key="m7/manifest.json", Body=json.dumps(manifest).encode())
    s3.put_object(Bucket="bkt", Key="m7/d/precious.txt", Body=b"precious")
    before = bucket_objects(s3, "bkt")
    with pytest.raises(KubetuneError) as refused:
        export(v1, "s3://bkt/m7")
    expected = f"s3://bkt/m7: holds 1 file(s) or folder(s) kubetune did not export (d/precious.txt) {HINT}"
    assert [str(p) for p in refused.value.problems] == [expected] and bucket_objects(s3, "bkt") == before
