"""The Containerfiles parse and install what the project's extras say, with every version pinned; each takes its
base image as a build argument, hides no failure, and the CUDA images keep their base's torch.

The runtime image is built for real by images/build-local.sh (tests/images/test_build_local.py, opt-in).
"""

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
INSTRUCTIONS = {"FROM", "WORKDIR", "COPY", "RUN", "ENV", "ARG", "LABEL", "USER", "ENTRYPOINT", "CMD", "EXPOSE"}
IMAGES = {"runtime": "runtime-constraints.txt", "cuda": "cuda-constraints.txt", "unsloth": "unsloth-constraints.txt"}
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0], line.split(None, 1)[1] if " " in line else "") for line in lines]


def pins(path: Path) -> dict[str, str]:
    lines = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
    return {canonicalize_name(line.split("==")[0]): line.split("==")[1] for line in lines}


@pytest.mark.parametrize(("image", "constraints"), IMAGES.items())
def test_containerfile_parses_copies_what_exists_and_installs_known_extras(image, constraints):
    steps = instructions(ROOT / "images" / f"Containerfile.{image}")
    assert {op for op, _ in steps} <= INSTRUCTIONS
    for op, args in steps:
        if op == "COPY":
            *sources, _ = args.split()
            assert all((ROOT / s).exists() for s in sources), args
    installs = [args for op, args in steps if op == "RUN" and "pip install" in args]
    (extras,) = re.findall(r'"\.\[([a-z0-9_,-]+)\]"', installs[0])
    assert set(extras.split(",")) <= set(PROJECT["optional-dependencies"])
    assert f"-c images/{constraints}" in installs[0]
    assert any(op == "COPY" and constraints in args for op, args in steps)


@pytest.mark.parametrize(("image", "constraints"), IMAGES.items())
def test_every_direct_dependency_is_pinned_within_the_projects_ranges(image, constraints):
    steps = instructions(ROOT / "images" / f"Containerfile.{image}")
    (extras,) = re.findall(r'"\.\[([a-z0-9_,-]+)\]"', next(args for op, args in steps if op == "RUN" and "pip install" in args))
    requirements = [Requirement(r) for r in PROJECT["dependencies"]]
    for extra in extras.split(","):
        requirements += [Requirement(r) for r in PROJECT["optional-dependencies"][extra]]
    pinned = pins(ROOT / "images" / constraints)
    from_base_image = {"torch"} if image != "runtime" else set()
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        if name in from_base_image or name == "kubetune":
            continue
        assert name in pinned, f"{requirement.name} is not pinned in images/{constraints}"
        assert requirement.specifier.contains(pinned[name].split("+")[0], prereleases=True), (requirement, pinned[name])


def test_the_validation_steps_image_holds_every_backend_whose_configuration_it_builds():
    steps = instructions(ROOT / "images" / "Containerfile.runtime")
    (extras,) = re.findall(r'"\.\[([a-z0-9_,-]+)\]"', next(args for op, args in steps if op == "RUN" and "pip install" in args))
    assert {"sft", "osft", "lora"} <= set(extras.split(","))
    backends = {"instructlab-training", "rhai-innovation-mini-trainer", "trl", "peft"}
    assert backends <= set(pins(ROOT / "images" / IMAGES["runtime"]))


def test_the_components_images_come_from_one_place():
    from kubetune import runtime

    assert runtime.RUNTIME_IMAGE.split(":")[0].endswith("kubetune-runtime")
    assert runtime.TRAINING_IMAGE.split(":")[0].endswith("kubetune-cuda")
    used = {
        p.parent.name
        for p in ROOT.glob("components/*/component.py")
        if "RUNTIME_IMAGE" in p.read_text() or "TRAINING_IMAGE" in p.read_text()
    }
    assert len(used) == len(list(ROOT.glob("components/*/component.py")))


@pytest.mark.parametrize("image", IMAGES)
def test_the_base_image_is_a_build_argument(image):
    steps = instructions(ROOT / "images" / f"Containerfile.{image}")
    first = [op for op, _ in steps].index("FROM")
    assert [op for op, _ in steps[:first]] == ["ARG"] and steps[0][1].startswith("BASE_IMAGE=")
    assert steps[first][1] == "${BASE_IMAGE}" and [op for op, _ in steps].count("FROM") == 1


@pytest.mark.parametrize("image", IMAGES)
def test_no_build_step_hides_a_failure(image):
    """Commands chain with && (an if/then/fi runs its command's status on): none is allowed to fail on."""
    for op, args in instructions(ROOT / "images" / f"Containerfile.{image}"):
        if op == "RUN":
            assert "||" not in args and not re.search(r";(?!\s*(then|fi)\b)", args), args


@pytest.mark.parametrize("image", ["cuda", "unsloth"])
def test_cuda_images_keep_their_base_images_torch(image):
    """torch comes from the base image: its own versions are constraints (images/base_constraints.py, run by python3)
    in place of NVIDIA's PIP_CONSTRAINT, the same python3 installs (python3 -m pip), and the default base holds a torch
    within the project's floor."""
    steps = instructions(ROOT / "images" / f"Containerfile.{image}")
    (install,) = [args for op, args in steps if op == "RUN" and "pip install" in args]
    generate = f"python3 images/base_constraints.py images/{IMAGES[image]} > images/base-constraints.txt"
    assert install.startswith(generate) and "env -u PIP_CONSTRAINT python3 -m pip install" in install
    # the python3 that wrote the constraints installs under them: a pip first on PATH may belong to another Python
    assert not re.search(r"(?<!-m )\bpip install", install), install
    assert f"-c images/base-constraints.txt -c images/{IMAGES[image]}" in install
    base = steps[0][1].removeprefix("BASE_IMAGE=")
    (torch_version,) = re.findall(r"^docker\.io/pytorch/pytorch:(\d+\.\d+\.\d+)-cuda", base)
    (torch,) = [Requirement(r) for r in PROJECT["dependencies"] if Requirement(r).name == "torch"]
    assert torch.specifier.contains(torch_version), (base, str(torch))


@pytest.mark.parametrize("image", ["cuda", "unsloth"])
def test_the_cuda_images_constraints_say_their_torch_is_the_base_images(image):
    """The default base is PyTorch's image, not NVIDIA's (NGC): the constraints' comments point at base_constraints.py."""
    notes = " ".join(line for line in (ROOT / "images" / IMAGES[image]).read_text().splitlines() if line.startswith("#"))
    assert "images/base_constraints.py" in notes and "NGC" not in notes, notes


def test_the_cuda_image_says_whether_it_holds_flash_attn():
    """No flash-attn by default (the backends then use sdpa and say so); a FLASH_ATTN version is built or the build
    fails; the image's label says which."""
    steps = instructions(ROOT / "images" / "Containerfile.cuda")
    assert ("ARG", "FLASH_ATTN=") in steps
    (label,) = [args for op, args in steps if op == "LABEL" and "flash-attn" in args]
    assert label == 'io.kubetune.flash-attn="${FLASH_ATTN:-absent: the backends use sdpa attention}"'


@pytest.mark.parametrize("image", IMAGES)
def test_pods_start_outside_the_source_folder(image):
    """The source is copied in to be installed; a pod's working directory (the last WORKDIR) must not hold its
    kubetune/ folder, which would shadow the installed package (kubetune.components lives only there)."""
    steps = instructions(ROOT / "images" / f"Containerfile.{image}")
    source = [args for op, args in steps[: steps.index(("COPY", "kubetune ./kubetune"))] if op == "WORKDIR"][-1]
    assert [args for op, args in steps if op == "WORKDIR"][-1] != source
