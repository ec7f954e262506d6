"""``kubetune.runs.kfp_local.init``: kfp.local resolves a ``dsl.OneOf`` of artifact outputs to the branch that ran
(plain kfp 2.17 raises "Expected 1 artifact in ArtifactSelectorSpec"), in both branches; and a ``dsl.If`` on a
pipeline task's named output (as a pipeline holding finetune branches on its ``promoted``)."""

from pathlib import Path
from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Output


@dsl.component(base_image="python:3.11")  # never pulled: kfp.local runs it in this interpreter
def write(text: str, out: Output[Artifact]):
    from pathlib import Path

    Path(out.path).write_text(text)


@dsl.pipeline
def either(take_first: bool) -> Artifact:
    with dsl.If(take_first == True):  # noqa: E712 (a KFP condition)
        first = write(text="first")
    with dsl.Else():
        second = write(text="second")
    return dsl.OneOf(first.outputs["out"], second.outputs["out"])


def test_an_artifact_oneof_is_the_output_of_the_branch_that_ran(tmp_path):
    from kubetune.runs import kfp_local

    kfp_local.init(str(tmp_path))
    assert Path(either(take_first=True).output.path).read_text() == "first"
    assert Path(either(take_first=False).output.path).read_text() == "second"


Verdict = NamedTuple("Verdict", [("promoted", bool), ("reason", str)])  # named outputs, as finetune's


@dsl.component(base_image="python:3.11")
def verdict(promote: bool) -> NamedTuple("Verdict", [("promoted", bool), ("reason", str)]):
    from collections import namedtuple

    return namedtuple("Verdict", ["promoted", "reason"])(promote, "asked")


@dsl.pipeline
def inner(promote: bool) -> Verdict:
    task = verdict(promote=promote)
    return Verdict(task.outputs["promoted"], task.outputs["reason"])


@dsl.pipeline
def outer():
    tuned = inner(promote=True)
    with dsl.If(tuned.outputs["promoted"] == True):  # noqa: E712 (an If alone, as in examples/compose_pipeline.py)
        write(text="promoted")


def test_a_condition_on_a_pipeline_tasks_named_output_takes_the_branch_it_says(tmp_path):
    """Plain kfp 2.17 skips the branch: "Could not resolve parent input: inner-promoted"."""
    from kubetune.runs import kfp_local

    kfp_local.init(str(tmp_path))
    outer()
    (run,) = tmp_path.iterdir()
    assert (run / "write" / "out").read_text() == "promoted"
