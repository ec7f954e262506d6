"""The torchrun backends (sft, osft) before they launch: CPU mode runs one process."""

import pytest

from kubetune.backends import cpu_mode
from kubetune.backends.registry import get_backend
from kubetune.validation import validate_spec
from tests.support.exits import OSFT, SFT, one_line_exit_2


@pytest.mark.parametrize("document", [SFT, OSFT], ids=["sft", "osft"])
@pytest.mark.parametrize("nproc", [2, "4"])
def test_cpu_mode_refuses_more_than_one_process(document, nproc, capsys):
    """Two gloo ranks of CPU mode diverge and wait forever: any count but 1 is refused before the launch."""
    pytest.importorskip({"sft": "instructlab.training", "osft": "mini_trainer"}[document["algorithm"]], reason="backend extra")
    assert cpu_mode.wanted(), "this test needs a machine without CUDA (CPU mode)"
    backend = get_backend(document["algorithm"])
    spec = validate_spec({**document, "nproc_per_node": nproc}, require_paths=False)
    err = one_line_exit_2(lambda: backend.local_params(spec), capsys)
    assert "nproc_per_node" in err and "CPU mode" in err
    one = validate_spec({**document, "nproc_per_node": 1}, require_paths=False)
    assert "nproc_per_node" not in backend.local_params(one)
