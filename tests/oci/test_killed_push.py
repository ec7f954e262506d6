"""A push killed at its last moment leaves no tag: skopeo sends every blob first and the manifest under the tag
last, so the tag moves only once the image is whole in the registry; the next export to that tag completes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from kubetune.oci import skopeo
from kubetune.steps.export import export, verify
from tests.oci.conftest import needs_tools
from tests.support.standins import FaultyProxy

ROOT = Path(__file__).resolve().parents[2]


@needs_tools
def test_the_export_step_killed_while_the_manifest_is_sent_leaves_no_tag(tiny_model, registry, base_image):
    sent, release = threading.Event(), threading.Event()

    def hold_the_manifest(method: str, path: str) -> str | None:
        if method == "PUT" and "/manifests/" in path:  # the tag is written by this request: it never arrives
            sent.set()
            release.wait(60)
            return "drop"
        return None

    with FaultyProxy(f"http://{registry}", hold_the_manifest) as proxy:
        destination = f"oci://{proxy.url.removeprefix('http://')}/kubetune/killed:1"
        code = f"import kubetune.steps.export as e; e.export({str(tiny_model)!r}, {destination!r}, base_image={base_image!r})"
        step = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, start_new_session=True, stderr=subprocess.PIPE)
        try:
            assert sent.wait(120), step.communicate(timeout=60)[1].decode()[-2000:]
            os.killpg(step.pid, signal.SIGKILL)  # the step and its skopeo, as a pod's end would
            step.wait(timeout=30)
        finally:
            release.set()
        blobs = [path for method, path, _ in proxy.requests if method == "PUT" and "/blobs/uploads/" in path]
    assert len(blobs) >= 5  # the config and the model files' layers were all in the registry...
    assert skopeo.inspect_raw(f"docker://{registry}/kubetune/killed:1", registry, plain_http=True) is None  # ...not the tag
    pushed = export(tiny_model, f"oci://{registry}/kubetune/killed:1", base_image=base_image)  # the next run completes
    assert verify(pushed.uri) == []
