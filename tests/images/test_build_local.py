"""images/build-local.sh for real (opt-in: KUBETUNE_IMAGE_BUILD=1): a Debian bookworm base made by mmdebstrap, the
runtime image built from images/Containerfile.runtime with buildah, and three components run inside it. With --clean,
as here: about 9 minutes on 2 quiet cores, up to 17 on a busy machine (README, "Images": 6 minutes without --clean);
it needs root, buildah, mmdebstrap, Debian's mirror and PyPI."""

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from kubetune.embedded.sample_data import SAMPLE_DATA

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(
    os.environ.get("KUBETUNE_IMAGE_BUILD") != "1" or not (shutil.which("buildah") and shutil.which("mmdebstrap")),
    reason="builds the runtime image (9-17 min): KUBETUNE_IMAGE_BUILD=1 runs it, as root with buildah and mmdebstrap "
    "(apt-get install buildah mmdebstrap)",
)
def test_build_local_builds_the_runtime_image_and_runs_three_components_in_it(tmp_path):
    build_dir = tmp_path / "build"  # an empty storage: the base image is made too, as on a clean machine
    env = {**os.environ, "KUBETUNE_BUILD_DIR": str(build_dir), "IMAGE": "localhost/kubetune-runtime:test"}
    result = subprocess.run(
        ["bash", str(ROOT / "images" / "build-local.sh"), "--clean"], env=env, capture_output=True, text=True, timeout=3600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("validate-kwargs: lora_sft on ") for line in lines), result.stdout
    (prepared,) = [line for line in lines if line.startswith("prepare-data: train {'format': 'kubetune-tokenized', ")]
    train, validation = map(int, re.findall(r"'samples': (\d+)", prepared))
    records = len(SAMPLE_DATA.read_text().splitlines())  # the sample chats, split train/validation
    assert train > 0 and validation > 0 and train + validation <= records, (prepared, records)
    assert any(line.startswith("export-model: ") and line.endswith("verify: complete and intact") for line in lines)
    assert sorted(p.name for p in build_dir.iterdir()) == [".kubetune-build", "logs"]  # --clean: images and storage gone


# images/build-local.sh's own behaviour, with stand-ins for buildah, mmdebstrap and id on PATH (a second or so each)
STUBS = {
    "id": '[ "$1" = -u ] && { echo 0; exit 0; }; exec /usr/bin/id "$@"',
    "mmdebstrap": 'echo "mmdebstrap $*" >>"$STUB_CALLS"\n'
    'if [ -n "${STUB_HANG:-}" ]; then echo $$ >"$STUB_HANG"; exec sleep 120; fi\n'
    'for last; do :; done; : >"$last"',
    "buildah": 'root=$2; shift 6; echo "buildah $*" >>"$STUB_CALLS"\n'
    'case $1 in\n'
    '  inspect) exit 1 ;;\n'
    '  from) mkdir -p "$root"; echo "ctr-$2" ;;\n'
    '  build) if [ -n "${STUB_NETWORK_DOWN:-}" ]; then echo "pip: Temporary failure in name resolution"; exit 1; fi ;;\n'
    '  images) echo "1 GB" ;;\n'
    '  run) echo "validate-kwargs: lora_sft on stub"; echo "three components: done" ;;\n'
    'esac',
}


@pytest.fixture
def stubbed(tmp_path):
    """An environment whose PATH finds the stand-ins first; STUB_CALLS collects their command lines."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in STUBS.items():
        (bin_dir / name).write_text(f"#!/bin/bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("WHEELHOUSE", "PIP_CERT")}
    return {**env, "PATH": f"{bin_dir}:{os.environ['PATH']}", "STUB_CALLS": str(tmp_path / "calls"), "WHEELHOUSE": "",
            "KUBETUNE_BUILD_DIR": str(tmp_path / "build")}


def build_local(env: dict, *args: str) -> subprocess.CompletedProcess:
    script = str(ROOT / "images" / "build-local.sh")
    return subprocess.run(["bash", script, *args], env=env, capture_output=True, text=True, timeout=60)


def test_clean_removes_the_storage_of_a_folder_it_made_and_its_containers(stubbed, tmp_path):
    result = build_local(stubbed, "--clean")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "build-local: done in" in result.stdout and "validate-kwargs: lora_sft on stub" in result.stdout
    calls = (tmp_path / "calls").read_text()
    assert "buildah rm ctr-scratch" in calls and "buildah rm ctr---pull-never" in calls
    assert sorted(p.name for p in (tmp_path / "build").iterdir()) == [".kubetune-build", "logs"]
    assert build_local(stubbed).returncode == 0  # a folder it made is its own again


def test_a_build_folder_it_did_not_make_is_refused_and_left_alone(stubbed, tmp_path):
    storage = tmp_path / "build" / "storage"  # e.g. KUBETUNE_BUILD_DIR=/var/lib/containers: podman's storage
    storage.mkdir(parents=True)
    (storage / "theirs").write_text("not ours")
    result = build_local(stubbed, "--clean")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (
        f"build-local: {tmp_path / 'build'} holds files build-local.sh did not make (no {tmp_path / 'build'}/.kubetune-build): "
        "set KUBETUNE_BUILD_DIR to a new folder\n"
    )
    assert (storage / "theirs").read_text() == "not ours" and not (tmp_path / "calls").exists()


def test_a_killed_build_stops_its_running_stage_says_so_and_exits_non_zero(stubbed, tmp_path):
    hang = tmp_path / "mmdebstrap.pid"
    script = str(ROOT / "images" / "build-local.sh")
    build = subprocess.Popen(["bash", script, "--clean"], env={**stubbed, "STUB_HANG": str(hang)}, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    for _ in range(300):  # the base image's stage is running mmdebstrap
        if hang.exists() and hang.read_text().strip():
            break
        time.sleep(0.1)
    build.send_signal(signal.SIGTERM)
    stdout, stderr = build.communicate(timeout=30)
    assert build.returncode == 143, stdout + stderr
    assert "build-local: interrupted\n" in stderr
    assert re.search(r"build-local: base image .* failed after \d+ s \(full log: .*/logs/base.log\)", stderr), stderr
    mmdebstrap = Path("/proc") / hang.read_text().strip()
    for _ in range(50):  # gone (or a zombie its dead parent left to init), not sleeping on
        if not mmdebstrap.exists() or "State:\tZ" in (mmdebstrap / "status").read_text():
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"mmdebstrap still runs: {(mmdebstrap / 'status').read_text()}")


def test_a_stage_that_finds_the_network_out_of_reach_exits_2(stubbed):
    result = build_local({**stubbed, "STUB_NETWORK_DOWN": "1"})
    assert result.returncode == 2, result.stdout + result.stderr
    assert "pip: Temporary failure in name resolution" in result.stderr
    hint = "build-local: the network is out of reach (see the log): check the proxy, Debian's mirror and PyPI\n"
    assert result.stderr.endswith(hint)
