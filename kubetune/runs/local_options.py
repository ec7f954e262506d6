"""The options of ``kubetune run-local``, checked before anything runs; those of a resumed run, checked again."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kubetune.backends.registry import DEFAULT_ALGORITHM, algorithms, get_backend
from kubetune.errors import KubetuneError, Problem
from kubetune.pipelines.parameters import EMBEDDED

CHECKPOINTS = ("best", "final")
URI_SCHEMES = ("s3", "hf", "kubetune")
OPTION = {  # pipeline argument -> the run-local option that sets it
    "algorithm": "--algorithm",
    "data_uri": "--data",
    "training_kwargs": "--kwargs",
    "export_destination": "--destination",
    "export_checkpoint": "--checkpoint",
    "export_overwrite": "--overwrite",
    "modelcar_base_image": "--modelcar-base-image",
    "promotion_gate": "--gate",
    "benchmark_tasks": "--evaluate-benchmark",
}


def backend_problem(algorithm: str) -> Problem | None:
    """The algorithm's training backend must be installed here (the training step would fail after data preparation)."""
    import importlib.util

    if (installs := get_backend(algorithm).installs) is None:
        return None
    module, extra = installs
    try:
        found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        found = False
    if found:
        return None
    message = f"{algorithm} trains with {module}, which is not installed here"
    return Problem("--algorithm", message, f"pip install 'kubetune[{extra}]'")


def eval_problem() -> Problem | None:
    """--evaluate-benchmark runs lm-eval (the eval extra): refused up front where it is not installed."""
    import importlib.util

    if importlib.util.find_spec("lm_eval") is not None:
        return None
    return Problem("--evaluate-benchmark", "runs lm-eval, which is not installed here", "pip install 'kubetune[eval]'")


def data_problem(data: str) -> Problem | None:
    """A local file or folder that exists and can be read, or an s3://, hf:// (or kubetune://) URI."""
    if "://" in data:
        scheme = data.split("://", 1)[0]
        if scheme in URI_SCHEMES:
            return None
        return Problem("--data", f"{data!r}: {scheme}:// is not a data source (a local path, s3:// or hf://)")
    path = Path(data)
    try:
        if path.is_dir():
            next(path.iterdir(), None)
        else:
            with path.open("rb") as f:
                f.read(1)
    except FileNotFoundError:
        return Problem("--data", f"{data}: no such file or folder")
    except OSError as error:
        return Problem("--data", f"{data}: cannot be read ({error.strerror or error})")
    return None


def credential_problem(option: str, value: str) -> Problem | None:
    """A credential inside a URI or path would be written to run.json and the run's logs: refused, unechoed."""
    from kubetune.secrets import scan_text

    if shapes := scan_text(value):
        hint = "credentials come from the environment: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, HF_TOKEN"
        return Problem(option, f"holds a credential ({', '.join(shapes)}); it is not shown or stored", hint)
    return None


def kwargs_problems(path: Path, algorithm: str) -> tuple[dict[str, Any] | None, list[Problem]]:
    """The kwargs document, checked as the pipeline's validation step will (errors name the file and line)."""
    from kubetune.contract.spec import read_document
    from kubetune.validation import validate_spec

    try:
        document, lines = read_document(path)
        if not isinstance(document, dict):
            return None, [Problem(f"--kwargs {path}", "is not a JSON object")]
        if document.setdefault("algorithm", algorithm) != algorithm:
            message = f"says algorithm {document['algorithm']!r} but --algorithm is {algorithm!r}"
            return None, [Problem(f"--kwargs {path}", message)]
        validate_spec(document, require_paths=False, source=str(path), lines=lines)
    except KubetuneError as error:
        return None, error.problems
    except OSError as error:
        return None, [Problem(f"--kwargs {path}", f"cannot be read ({error.strerror or error})")]
    return document, []


def check_options(
    algorithm: str,
    checkpoint: str,
    data: str | None,
    kwargs: Path | None,
    destination: str,
    overwrite: bool,
    run_folder: Path | None = None,
    gate: str = "",
    evaluate_benchmark: bool = False,
    modelcar_base_image: str = "",
) -> dict[str, Any]:
    """The pipeline arguments of these options; every problem with any of them in one KubetuneError.
    Local paths become absolute (run.json holds them so, for a resume from any directory)."""
    problems: list[Problem] = []
    arguments: dict[str, Any] = {"algorithm": algorithm, "export_checkpoint": checkpoint}
    if evaluate_benchmark:  # lm-eval on the base and the fine-tuned model, offline: the tasks built from the validation chats
        arguments["benchmark_tasks"] = "held_out"
        if found := eval_problem():
            problems.append(found)
    if algorithm not in algorithms():
        problems.append(Problem("--algorithm", f"must be one of {', '.join(algorithms())}, got {algorithm!r}"))
    elif found := backend_problem(algorithm):
        problems.append(found)
    elif kwargs is None and algorithm not in EMBEDDED:
        problems.append(Problem("--kwargs", f"is needed for {algorithm}: it has no embedded kwargs"))
    if checkpoint not in CHECKPOINTS:
        problems.append(Problem("--checkpoint", f"must be best or final, got {checkpoint!r}"))
    if data is not None and not data.strip():
        problems.append(Problem("--data", "is empty: give a file, a folder, s3:// or hf://, or leave --data out for the sample"))
    elif data:
        if found := credential_problem("--data", data) or data_problem(data):
            problems.append(found)
        arguments["data_uri"] = data if "://" in data else str(Path(data).resolve())
    if kwargs is not None and kwargs.is_dir():
        message = "is empty: give a JSON file" if str(kwargs) == "." else f"{kwargs}: is a folder, not a JSON file"
        problems.append(Problem("--kwargs", message))
    elif kwargs is not None:
        document, found = kwargs_problems(kwargs, algorithm if algorithm in algorithms() else DEFAULT_ALGORITHM)
        problems += found
        if document is not None:
            arguments["training_kwargs"] = document
    if destination and (found := credential_problem("--destination", destination)):
        problems.append(found)
    elif destination:
        protect = {"--data": arguments.get("data_uri"), "--kwargs": kwargs, "the run folder -o": run_folder}
        problems += destination_problems(destination, overwrite, protect)
        arguments["export_destination"] = destination if "://" in destination else os.path.abspath(destination)
    if overwrite:
        arguments["export_overwrite"] = True
    if modelcar_base_image or destination.startswith("oci://"):
        problems += modelcar_problems(modelcar_base_image, destination, arguments)
    if gate:
        problems += gate_problems(gate, arguments.get("benchmark_tasks", ""))
        arguments["promotion_gate"] = gate
    if problems:
        raise KubetuneError(problems, "invalid run-local options")
    return arguments


def modelcar_problems(image: str, destination: str, arguments: dict[str, Any]) -> list[Problem]:
    """--modelcar-base-image: only with an oci:// --destination; no credential in it; an oci-layout:<dir> made absolute;
    the base image (the default one when none is given) there and readable, before anything runs."""
    from kubetune.oci.modelcar import LAYOUT_PREFIX, check_base_image

    option = "--modelcar-base-image"
    if not destination.startswith("oci://"):
        return [Problem(option, "is the base image of an oci:// --destination", "give --destination oci://...")]
    if image.startswith(LAYOUT_PREFIX):
        image = LAYOUT_PREFIX + os.path.abspath(image.removeprefix(LAYOUT_PREFIX))
    try:
        check_base_image(image)
    except KubetuneError as error:  # a refusal names the field, a registry failure its host
        return [Problem(option if p.where == "modelcar_base_image" else f"{option} {p.where}", p.message, p.hint)
                for p in error.problems]  # fmt: skip
    if image:
        arguments["modelcar_base_image"] = image
    return []


def gate_problems(gate: str, benchmark_tasks: str) -> list[Problem]:
    """The promotion gate's thresholds, checked as the pipeline's validation step will."""
    from kubetune.contract.gate import check_gate

    try:
        check_gate(gate, benchmark_tasks, where="--gate")
    except KubetuneError as error:
        return error.problems
    return []


def destination_problems(destination: str, overwrite: bool, protect: dict[str, Any]) -> list[Problem]:
    """The export step's own destination check, up front (``protect``: local inputs and the run folder)."""
    from kubetune.steps.export import check_destination

    keep = {name: Path(path) for name, path in protect.items() if path and "://" not in str(path)}
    try:
        check_destination(destination, overwrite, source=None, protect=keep)
    except KubetuneError as error:
        return [Problem(f"--destination {p.where}".rstrip(), p.message, p.hint) for p in error.problems]
    return []


def resumed_arguments(record: dict[str, Any], given: dict[str, Any], run_folder: Path | None = None) -> dict[str, Any]:
    """The recorded run's arguments, checked again; an option given again must say the same (``given``:
    options set away from their defaults). A relative path of an older record is refused from another
    working directory (it would name another file or folder there)."""
    recorded = record.get("arguments") or {}
    defaults = {"algorithm": DEFAULT_ALGORITHM, "export_checkpoint": "best"}
    problems = [
        Problem(OPTION.get(key, key), f"differs from the run being resumed ({recorded.get(key, defaults.get(key))!r})",
                "--resume continues with the run's own options: leave it out")
        for key, value in given.items()
        if value != defaults.get(key) and value != recorded.get(key, defaults.get(key))
    ]  # fmt: skip
    if record.get("cwd") != os.getcwd():
        for key in ("data_uri", "export_destination"):
            value = recorded.get(key)
            if isinstance(value, str) and value and "://" not in value and not os.path.isabs(value):
                started = f"in {record['cwd']}" if record.get("cwd") else "in another working directory"
                message = f"was recorded as the relative path {value!r} by a run started {started}"
                problems.append(Problem(OPTION[key], message, "run --resume from the directory the run started in"))
    if problems:
        raise KubetuneError(problems, "cannot resume")
    destination = recorded.get("export_destination", "")
    if destination:
        protect = {"--data": recorded.get("data_uri"), "the run folder -o": run_folder}
        if found := destination_problems(destination, bool(recorded.get("export_overwrite")), protect):
            raise KubetuneError(found, "cannot resume")
    return recorded
