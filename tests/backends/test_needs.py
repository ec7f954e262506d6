"""Options the training image cannot honour (kubetune/backends/needs.py): refused by name before the model is fetched."""

import pytest

from kubetune.backends import needs
from kubetune.backends.registry import get_backend
from kubetune.validation import validate_spec
from tests.support.exits import OSFT, SFT, one_line_exit_2


@pytest.mark.parametrize(
    ("algorithm", "option", "field"),
    [
        ("sft", {"use_liger": True}, "use_liger"),
        ("sft", {"distributed_backend": "deepspeed"}, "distributed_backend"),
        ("osft", {"use_liger": True}, "use_liger"),
        ("lora_sft", {"use_liger_kernel": True}, "use_liger_kernel"),
        ("lora_sft", {"deepspeed": "/configs/ds.json"}, "deepspeed"),
    ],
)
def test_an_option_the_training_image_cannot_honour_is_refused_before_the_model_is_fetched(
    algorithm, option, field, tmp_path, capsys
):
    """liger-kernel and deepspeed are absent here: the step ends in one line naming the field (exit 2), before it
    fetches the model (the model URI here does not exist) and long before the backend would fail."""
    from kubetune.steps.train import train

    module = {"use_liger": "liger_kernel", "use_liger_kernel": "liger_kernel"}.get(field, "deepspeed")
    if __import__("importlib.util").util.find_spec(module) is not None:
        pytest.skip(f"{module} is installed here: nothing to refuse")
    document = {**{"sft": SFT, "osft": OSFT, "lora_sft": {"algorithm": "lora_sft"}}[algorithm], **option}
    spec = validate_spec(document, require_paths=False)  # validation accepts it: it cannot know the training image
    err = one_line_exit_2(lambda: train(spec, str(tmp_path / "no-model"), tmp_path / "train", tmp_path / "out"), capsys)
    assert f"- {field}: needs" in err and "not installed" in err and "no-model" not in err, err
    assert err.count("\n") == 1  # the title and the one problem


def test_an_option_that_needs_cuda_is_refused_without_it(monkeypatch):
    """The package present but no CUDA GPU (liger's kernels and deepspeed are GPU-only): refused by name too."""
    osft = get_backend("osft").needs
    monkeypatch.setitem(osft, "use_liger", needs.Need(bool, "json", "liger-kernel", True))  # an installed module
    monkeypatch.setattr(needs, "cuda_available", lambda: False)
    [problem] = needs.environment_problems(osft, {"use_liger": True})
    assert problem.where == "use_liger" and "CUDA" in problem.message
    assert needs.environment_problems(osft, {"use_liger": False}) == []
    monkeypatch.setattr(needs, "cuda_available", lambda: True)
    assert needs.environment_problems(osft, {"use_liger": True}) == []
