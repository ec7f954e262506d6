"""`kubetune compile` gives the same bytes for the same code, also from one process to the next (what `kubetune
upload`'s content-named versions rely on): KFP's header comment prints dict defaults in an order that changes
between processes, and kubetune sorts them."""

import subprocess
import sys

import pytest

from kubetune.runs.kfp_api import pipelines, stable_header


@pytest.mark.parametrize("name", sorted(pipelines()))
def test_two_processes_compile_a_pipeline_to_the_same_bytes(name, tmp_path):
    outputs = []
    for run in range(3):
        output = tmp_path / f"{run}.yaml"
        code = f"from kubetune.runs.kfp_api import compile_pipeline; compile_pipeline({name!r}, {str(output)!r})"
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=300)
        outputs.append(output.read_bytes())
    assert outputs[0] == outputs[1] == outputs[2]


def test_the_header_sorts_dict_defaults_and_leaves_everything_else_alone():
    text = "#    kwargs: dict [Default: {'b': 1.0, 'a': {'d': [2.0], 'c': True}}]\n#    name: str [Default: 'x']\nspec: {}\n"
    assert stable_header(text) == (
        "#    kwargs: dict [Default: {'a': {'c': True, 'd': [2.0]}, 'b': 1.0}]\n#    name: str [Default: 'x']\nspec: {}\n"
    )
