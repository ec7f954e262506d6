"""What a registry answers is read from skopeo's status text only, never from the host, repository, tag or digest
that skopeo's message also names; a registry that takes no push is one line (exit 2), never an internal error."""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import Iterator

import pytest

from kubetune.errors import KubetuneError, outcome
from kubetune.steps.export import check_destination, export, verify
from tests.oci.conftest import needs_tools

pytestmark = needs_tools


@contextlib.contextmanager
def answering(status: int) -> Iterator[str]:
    """``host:port`` of a server that answers the registry ping (``/v2/``) and then ``status``, without a body,
    to every request (a proxy in front of no registry, a registry without that repository...)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def answer(self) -> None:
            self.send_response(200 if self.path.rstrip("/") == "/v2" else status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = answer

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_status_words_in_the_reference_are_not_the_registrys_answer(registry):
    check_destination(f"oci://{registry}/models-403/chat:build-401")  # an absent tag: a first push may go there
    missing = f"oci://{registry}/denied/chat@sha256:4010{'0' * 56}0403"
    assert verify(missing) == [f"{missing}: is not there (no such image or tag)"]


@pytest.mark.parametrize(
    ("status", "said"), [(401, "refused the credentials"), (403, "denied access"), (500, "failed while reading")]
)
def test_the_registrys_status_is_told_on_one_line(status, said):
    with answering(status) as host, pytest.raises(KubetuneError) as info:
        check_destination(f"oci://{host}/kubetune/tiny:1")
    code, text = outcome(info.value)
    assert code == 2 and "\n" not in text and text.startswith(f"{host}: {said}")


def test_a_registry_answering_404_to_the_push_is_one_line(tiny_model, base_image):
    with answering(404) as host, pytest.raises(KubetuneError) as info:
        export(tiny_model, f"oci://{host}/kubetune/tiny:1", base_image=base_image)  # the tag check finds it absent
    code, text = outcome(info.value)
    assert code == 2 and "\n" not in text and text.startswith(f"{host}: failed while pushing to oci://{host}/kubetune/tiny:1")
