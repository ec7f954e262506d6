"""What the CLI does with a KFP API server: compile, upload (idempotent), run, and recurring runs.

Connection settings are ``kfp.Client``'s own: ``host`` or ``KF_PIPELINES_ENDPOINT``, else the kubeconfig's
cluster (or in-cluster config); ``namespace`` for multi-user installs; a bearer token from ``token`` or
``KF_PIPELINES_TOKEN``, else kfp.Client's credentials (kubeconfig, ServiceAccount).
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import os
import re
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kubetune.errors import Failure, KubetuneError, Problem, hide, public_url, redact, talking_to
from kubetune.files import replaced


def pipelines() -> dict[str, Any]:
    from kubetune.pipelines.evaluate_export import evaluate_export
    from kubetune.pipelines.finetune import finetune, finetune_trainjob, finetune_workspace

    return {
        "finetune": finetune,
        "finetune-workspace": finetune_workspace,
        "finetune-trainjob": finetune_trainjob,
        "evaluate-export": evaluate_export,
    }


def check_pipeline(name: str) -> None:
    if name not in pipelines():
        raise KubetuneError(
            [Problem("pipeline", f"unknown pipeline {name!r}; choose from {', '.join(pipelines())}")], "cannot compile"
        )


def compile_pipeline(name: str, output: str | Path) -> Path:
    """Compile a pipeline to YAML; the same code always gives the same bytes. The file appears whole or not
    at all: it is written beside ``output`` and renamed into place."""
    from kfp import compiler

    check_pipeline(name)
    output = Path(output)
    try:
        with replaced(output, suffix=output.suffix) as partial:
            compiler.Compiler().compile(pipelines()[name], str(partial))
            partial.write_text(stable_header(partial.read_text()))
    except OSError as e:
        raise Failure(str(output), f"cannot be written: {e.strerror or e}") from None
    return output


_DEFAULT_LINE = re.compile(r"(?m)^(#    \w+: (?:dict|list) \[Default: )(.*)(\])$")


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


def stable_header(text: str) -> str:
    """KFP's header comment with every dict default's keys sorted: KFP prints them in an order that changes from one
    process to the next (the YAML body below is stable), which would make the same code compile to other bytes."""

    def line(match: re.Match) -> str:
        try:
            value = ast.literal_eval(match[2])
        except (ValueError, SyntaxError):
            return match[0]
        return f"{match[1]}{_sorted(value)!r}{match[3]}"

    return _DEFAULT_LINE.sub(line, text)


def client(host: str | None = None, namespace: str | None = None, token: str | None = None) -> Guarded:
    """A ``kfp.Client`` whose every call ends a failure with one line naming the host (never its credentials)."""
    import kfp

    setting = "--host" if host else "KF_PIPELINES_ENDPOINT"
    host = host or os.environ.get("KF_PIPELINES_ENDPOINT") or None
    token = token or os.environ.get("KF_PIPELINES_TOKEN")
    hide_credentials(host, token, setting)
    if host is None and not _cluster_config():
        raise Failure("KFP host", "none given and no kubeconfig found", "use --host or KF_PIPELINES_ENDPOINT")
    if host is not None:
        _check_host(host, setting)

    class Client(kfp.Client):
        def get_kfp_healthz(self, sleep_duration: int = 5):  # once, not 5 times with 5 s sleeps and tracebacks
            return _health(self, host or self._existing_config.host)

    kwargs = {"namespace": namespace} if namespace else {}
    with talking_to(host), _quiet():
        made = Client(host=host, existing_token=token, ui_host=public_url(host) if host else None, **kwargs)
    guarded = Guarded(made, host or made._existing_config.host)
    if namespace:  # kfp.Client checked nothing: a wrong host would fail later, less clearly
        with talking_to(guarded.host), _quiet():
            _health(made, guarded.host)
    return guarded


def _health(kfp_client, host: str):
    """The KFP API's health answer, or a one-line error when what answers is not a KFP API server."""
    import kfp_server_api

    response = kfp_client._healthz_api.healthz_service_get_healthz(_preload_content=False)
    try:
        answer = json.loads(response.data)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        kind = response.headers.get("Content-Type") or "no content type"
        raise Failure(
            public_url(host), f"is not a KFP API server (/apis/v2beta1/healthz answered {kind})", "give the KFP API endpoint"
        )
    return kfp_server_api.V2beta1GetHealthzResponse(multi_user=answer.get("multi_user"))


def hide_credentials(host: str | None, token: str | None, setting: str = "--host") -> None:
    """Never show the token or the host URL's user and password; a host that is no URL is refused (one line
    naming ``setting``, never the URL itself: it may hold a password)."""
    hide(token)
    if host:
        try:
            parts = urlsplit(host if "://" in host else f"https://{host}")
            password = parts.password
        except ValueError as e:
            raise Failure(setting, f"is not a valid URL ({e})", "give http(s)://host[:port]") from None
        hide(password)
        hide(parts.username if password else None)


def _cluster_config() -> bool:
    """Whether kfp.Client can find a cluster without a host: in a pod, or a kubeconfig."""
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return True
    paths = os.environ.get("KUBECONFIG", "~/.kube/config").split(os.pathsep)
    return any(Path(p).expanduser().is_file() for p in paths if p)


def _check_host(host: str, setting: str = "--host") -> None:
    parts = urlsplit(host if "://" in host else f"https://{host}")
    problem = None
    if parts.scheme not in ("http", "https"):
        problem = f"scheme {parts.scheme!r} is not http or https"
    elif not parts.hostname:
        problem = "names no host"
    else:
        try:
            parts.port  # noqa: B018 -- raises on a port that is not a number in range
        except ValueError:
            problem = "has an invalid port"
    if problem:
        raise Failure(setting, f"{public_url(host) if parts.hostname else 'the URL'} {problem}")


@contextmanager
def _quiet() -> Iterator[None]:
    """kfp.Client's FutureWarning, log lines and printed links: links are shown redacted, the rest dropped."""
    import logging

    printed = io.StringIO()
    logging.disable(logging.CRITICAL)
    try:
        with warnings.catch_warnings(), redirect_stdout(printed):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(logging.NOTSET)
        for line in printed.getvalue().splitlines():
            if " details: " in line:
                print(redact(line))


class Guarded:
    """A kfp.Client: each call's network and HTTP failures end as one line naming the host."""

    def __init__(self, kfp_client, host: str):
        self._client, self.host = kfp_client, host

    def __getattr__(self, name: str):
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute

        def call(*args, **kwargs):
            with talking_to(self.host), _quiet():
                return attribute(*args, **kwargs)

        return call


def upload(kfp_client, pipeline: str, name: str | None = None, version: str | None = None) -> dict[str, str]:
    """Create the pipeline, or a new version of it, by name. The version name defaults to the content's
    hash, so uploading the same pipeline twice creates nothing new."""
    name = name or f"kubetune-{pipeline}"
    with tempfile.TemporaryDirectory() as tmp:
        package = compile_pipeline(pipeline, Path(tmp) / f"{pipeline}.yaml")
        version = version or "v-" + hashlib.sha256(package.read_bytes()).hexdigest()[:12]
        pipeline_id = kfp_client.get_pipeline_id(name)
        if pipeline_id is None:
            created = kfp_client.upload_pipeline(str(package), pipeline_name=name)
            pipeline_id = created.pipeline_id
            # the first upload's version carries the pipeline's name; add ours so runs can name it
        existing = _version_id(kfp_client, pipeline_id, version)
        if existing:
            return {"pipeline_id": pipeline_id, "version_id": existing, "version": version, "created": "no"}
        made = kfp_client.upload_pipeline_version(str(package), version, pipeline_id=pipeline_id)
        return {"pipeline_id": pipeline_id, "version_id": made.pipeline_version_id, "version": version, "created": "yes"}


def _version_id(kfp_client, pipeline_id: str, version: str) -> str | None:
    predicate = {"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": version}]}
    found = kfp_client.list_pipeline_versions(pipeline_id, filter=json.dumps(predicate)).pipeline_versions or []
    return found[0].pipeline_version_id if found else None


def parameters(spec: Path | None, params: list[str], pipeline: str = "finetune") -> dict[str, Any]:
    """Pipeline arguments, every one checked before anything connects: a spec file becomes ``algorithm`` +
    ``training_kwargs`` (validated first, with file and line on error); each ``KEY=VALUE`` must name a
    parameter of ``pipeline`` (else a did-you-mean) and hold a value of its type (JSON for numbers, booleans,
    objects and lists); ``algorithm``/``training_kwargs`` given with ``-p`` are validated together as a spec.

    Nothing that looks like a credential is ever sent: every argument (spec and ``-p`` values, keys too) is
    scanned first, and the report names the argument without echoing it."""
    from kubetune.contract.spec import read_document
    from kubetune.secrets import HINT, redact, scan_document, scan_spec, shown
    from kubetune.validation import validate_spec

    arguments: dict[str, Any] = {}
    validated = None
    if spec is not None:  # read once, in bounded memory; what is validated is what is sent
        document, lines = read_document(spec)
        validated = validate_spec(document, require_paths=False, source=str(spec), lines=lines)
        document = dict(document)
        arguments["algorithm"] = document.pop("algorithm")
        arguments["training_kwargs"] = document
    problems, given = [], {}
    for pair in params:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            problems.append(Problem(f"-p {shown(pair)}", "is not KEY=VALUE"))
            continue
        given[key] = value
        try:
            arguments[key] = json.loads(value, parse_constant=_not_a_number)
        except ValueError:
            arguments[key] = value
    suspects, hidden = scan_document({k: v for k, v in arguments.items() if k != "training_kwargs"})
    in_spec, more = scan_spec(arguments.get("training_kwargs"), "training_kwargs")  # its secrets: references
    suspects, hidden = suspects + in_spec, hidden | more
    problems += [Problem(f"argument `{s.where}`", s.reason, HINT) for s in suspects]
    if not suspects:  # a credential is told first (and alone): a name or a type is not worth echoing it
        problems += _argument_problems(pipeline, given, arguments, spec is not None)
        if not problems:
            problems += _value_problems(pipeline, arguments)
    spec_ok = not suspects and not {p.where for p in problems} & {"-p algorithm", "-p training_kwargs"}
    if spec_ok and validated is None and {"algorithm", "training_kwargs"} & given.keys():
        defaults = _inputs(pipeline)
        algorithm = arguments.get("algorithm", getattr(defaults.get("algorithm"), "default", None))
        kwargs = arguments.get("training_kwargs", getattr(defaults.get("training_kwargs"), "default", None)) or {}
        try:
            source = "-p training_kwargs" if "training_kwargs" in given else f"{pipeline}'s default training_kwargs"
            validated = validate_spec({"algorithm": algorithm, **kwargs}, require_paths=False, source=source)
        except KubetuneError as e:
            problems += e.problems
    if not problems and validated is not None and pipeline == "finetune-trainjob":  # the TrainJob places the nodes
        from kubetune.cluster.launch import placement_problems

        problems += placement_problems(validated.params, arguments.get("nnodes", 2), arguments.get("gpus", 1))
    if problems:
        shown_problems = [Problem(redact(p.where, hidden), redact(p.message, hidden), p.hint) for p in problems]
        raise KubetuneError(shown_problems, "invalid parameters")
    return arguments


def _inputs(pipeline: str) -> dict[str, Any]:
    """The pipeline's parameters: name -> KFP input spec (``type``: String, Integer, Float, Boolean, Dict,
    List; ``default``; ``optional``)."""
    return dict(pipelines()[pipeline].component_spec.inputs or {})


_KINDS = {  # KFP parameter type -> (what the value must be, the Python types it may have)
    "String": ("text", (str,)),
    "Integer": ("an integer", (int,)),
    "Float": ("a number", (int, float)),
    "Boolean": ("true or false", (bool,)),
    "Dict": ("a JSON object", (dict,)),
    "List": ("a JSON list", (list,)),
}


def _kind_of(value: Any) -> str:
    kinds = ((bool, "true or false"), (int, "an integer"), (float, "a number"), (dict, "a JSON object"), (list, "a JSON list"))
    return next((name for cls, name in kinds if isinstance(value, cls)), "null" if value is None else "text")


def _argument_problems(pipeline: str, given: dict[str, str], arguments: dict[str, Any], with_spec: bool) -> list[Problem]:
    """Each ``-p`` must name a parameter of ``pipeline`` and hold a value of its type (a String takes the text
    as written); ``algorithm``/``training_kwargs`` come from the spec or from ``-p``, not both."""
    import difflib

    inputs, problems = _inputs(pipeline), []
    if with_spec and "training_kwargs" not in inputs:
        problems.append(Problem("--spec", f"{pipeline} takes no spec (it trains nothing)"))
    for key, text in given.items():
        if with_spec and key in ("algorithm", "training_kwargs"):
            problems.append(Problem(f"-p {key}", "is given by --spec too; give one or the other"))
            continue
        if key not in inputs:
            close = difflib.get_close_matches(key, list(inputs), n=1)
            hint = f"did you mean {close[0]}?" if close else f"its parameters: {', '.join(inputs)}"
            problems.append(Problem(f"-p {key}", f"is not a parameter of {pipeline}", hint))
            continue
        kind = getattr(inputs[key], "type", None)
        if kind == "String" and not isinstance(arguments[key], str):
            arguments[key] = text  # a string parameter takes the text as written: 0123, true, null
        what, types = _KINDS.get(kind, ("", (object,)))
        value = arguments[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            problems.append(Problem(f"-p {key}", f"is {_kind_of(value)}; {pipeline} takes {what} ({kind})"))
    missing = [k for k, spec in inputs.items() if not getattr(spec, "optional", True) and k not in arguments]
    problems += [Problem(f"-p {k}", f"is required by {pipeline}") for k in missing]
    return problems


def _value_problems(pipeline: str, arguments: dict[str, Any]) -> list[Problem]:
    """Values the steps after training would refuse, refused before the run starts: an export checkpoint other
    than best/final, a registration without its model name or version, a local export registered without its
    real URI; and an s3:// base model for the TrainJob (its launcher pod holds no S3 credential)."""
    from kubetune.steps.register import REAL_SCHEMES

    defaults = {k: getattr(spec, "default", None) for k, spec in _inputs(pipeline).items()}
    value = {**defaults, **arguments}.get
    problems = []
    retention = value("checkpoint_retention")
    if isinstance(retention, int) and retention < 0:  # a negative one would prune every mirrored save, the newest too
        problems.append(Problem("-p checkpoint_retention", f"must be 0 (keep all) or more, got {retention}"))
    gpu_memory = value("gpu_memory_gib")
    if isinstance(gpu_memory, int | float) and not 0 <= gpu_memory < float("inf"):  # NaN too: the validation step refuses it
        problems.append(Problem("-p gpu_memory_gib", f"must be the GiB of one GPU, or 0 to derive them, got {gpu_memory}"))
    if "export_checkpoint" in defaults and value("export_checkpoint") not in ("best", "final"):
        problems.append(Problem("-p export_checkpoint", f'must be "best" or "final", got {value("export_checkpoint")!r}'))
    if value("registry_server"):
        for name in ("registry_model_name", "registry_model_version"):
            if not value(name):
                problems.append(Problem(f"-p {name}", "is required when registry_server is set"))
        destination, uri = value("export_destination") or "", value("registry_uri") or ""
        if destination and not destination.startswith("s3://") and not uri:
            problems.append(
                Problem(
                    "-p registry_uri",
                    f"is required to register a model exported to a local path ({destination})",
                    "give its real URI, e.g. pvc://claim/path",
                )
            )
        elif uri and not uri.startswith(REAL_SCHEMES):
            readable = ", ".join(REAL_SCHEMES)
            problems.append(Problem("-p registry_uri", f"{uri!r} is not a location the serving stack can read (use {readable})"))
    if pipeline == "finetune-trainjob" and str(value("model_uri") or "").startswith("s3://"):
        problems.append(
            Problem(
                "-p model_uri",
                "an s3:// model cannot be used by finetune-trainjob (its launcher resolves the model and holds no S3 credential)",
                "give a path on the workspace PVC or a Hugging Face hub id",
            )
        )
    return problems


def _not_a_number(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # a NaN/Infinity -p value stays the string the user wrote


def experiment_id(kfp_client, name: str) -> str:
    return kfp_client.create_experiment(name).experiment_id  # returns the existing one when the name is taken


def _placed(kfp_client, pipeline: str, experiment: str) -> tuple[dict[str, str], dict[str, str]]:
    """The pipeline uploaded (if needed), and the ids a run or a recurring run names: experiment, pipeline, version."""
    uploaded = upload(kfp_client, pipeline)
    ids = {"pipeline_id": uploaded["pipeline_id"], "version_id": uploaded["version_id"]}
    return uploaded, {"experiment_id": experiment_id(kfp_client, experiment), **ids}


def run(kfp_client, pipeline: str, arguments: dict, experiment: str, run_name: str | None = None) -> dict[str, str]:
    uploaded, ids = _placed(kfp_client, pipeline, experiment)
    created = kfp_client.run_pipeline(job_name=run_name or f"{pipeline}-{uploaded['version']}", params=arguments, **ids)
    return {"run_id": created.run_id, **uploaded}


def schedule(
    kfp_client,
    pipeline: str,
    name: str,
    arguments: dict,
    experiment: str,
    cron: str | None = None,
    interval_seconds: int | None = None,
    max_concurrency: int = 1,
    start: str | None = None,
    end: str | None = None,
    catchup: bool = False,
) -> dict[str, str]:
    """A recurring run: a 6-field cron expression (seconds first, as KFP's scheduler reads it) or an interval."""
    check_schedule(cron, interval_seconds, max_concurrency, start, end)
    uploaded, ids = _placed(kfp_client, pipeline, experiment)
    created = kfp_client.create_recurring_run(
        job_name=name,
        cron_expression=cron,
        interval_second=interval_seconds,
        max_concurrency=max_concurrency,
        no_catchup=not catchup,
        start_time=start,
        end_time=end,
        params=arguments,
        **ids,
    )
    return {"recurring_run_id": created.recurring_run_id, **uploaded}


# KFP's scheduler (robfig/cron with seconds): field, lowest, highest, names
CRON_FIELDS = (
    ("seconds", 0, 59, ()),
    ("minutes", 0, 59, ()),
    ("hours", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")),
    ("day of week", 0, 6, ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")),
)
RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


def check_schedule(
    cron: str | None,
    interval_seconds: int | None,
    max_concurrency: int = 1,
    start: str | None = None,
    end: str | None = None,
) -> None:
    """Every problem with a recurring run's trigger, found before anything connects to KFP."""
    problems = []
    if (cron is None) == (interval_seconds is None):
        problems.append(Problem("schedule", "give exactly one of --cron or --interval"))
    if cron is not None:
        problems += cron_problems(cron)
    if interval_seconds is not None and interval_seconds <= 0:
        problems.append(Problem("interval", f"{interval_seconds} is not a positive number of seconds"))
    if not 1 <= max_concurrency <= 10:
        problems.append(Problem("max_concurrency", f"{max_concurrency} is not in 1..10 (KFP's limits)"))
    times = {}
    for field, value in (("start", start), ("end", end)):
        if value is not None:
            times[field] = _rfc3339(value)
            if times[field] is None:
                problems.append(Problem(field, f"{value!r} is not an RFC 3339 time (e.g. 2026-01-31T03:00:00Z)"))
    if times.get("start") and times.get("end") and times["end"] <= times["start"]:
        problems.append(Problem("end", f"{end} is not after the start, {start}"))
    if problems:
        raise KubetuneError(problems, "cannot schedule")


def _rfc3339(value: str) -> datetime | None:
    if not RFC3339.fullmatch(value):
        return None
    try:
        return datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError:  # a month 13, a February 30, ...
        return None


def cron_problems(cron: str) -> list[Problem]:
    """What is wrong with a 6-field cron expression, seconds first (KFP's format)."""
    fields = cron.split()
    if len(fields) != 6:
        return [Problem("cron", f"{cron!r} has {len(fields)} fields; KFP wants 6, seconds first (e.g. '0 0 3 * * 1')")]
    problems = []
    for text, (name, low, high, names) in zip(fields, CRON_FIELDS, strict=True):
        if not all(_cron_part_ok(part, low, high, names, name.startswith("day")) for part in text.split(",")):
            problems.append(Problem("cron", f"{name} field {text!r} is not a value, range, list or step in {low}..{high}"))
    return problems


def _cron_part_ok(part: str, low: int, high: int, names: tuple[str, ...], question_mark: bool) -> bool:
    """One comma-separated part: ``*``, ``?`` (days), ``N``, ``A-B``, each optionally ``/STEP``."""
    base, slash, step = part.partition("/")
    if slash and not (step.isdigit() and int(step) > 0):
        return False
    if base == "*" or (base == "?" and question_mark and not slash):
        return True

    def value(token: str) -> int | None:
        if token.upper() in names:
            return names.index(token.upper()) + low
        return int(token) if token.isdigit() and low <= int(token) <= high else None

    first, dash, last = base.partition("-")
    start, stop = value(first), value(last) if dash else None
    return start is not None and not (dash and (stop is None or stop < start))
