"""One error type for every mistake in a user's input, and what a user sees when anything else ends a command.

- ``KubetuneError``: every problem found in the user's input, each with a place (exit code 2).
- ``Failure``: an environment or network failure (a file, a disk, a host), told on one line (exit code 2).
  ``explain(exc)`` maps an exception to one: ``OSError`` (its file and what happened), connection errors
  (urllib3, requests, botocore, the KFP and Kubernetes clients' ``ApiException``: the host and what happened).
- ``outcome(exc)``: the exit code and the text for any exception that ends a command: a KeyboardInterrupt is
  "interrupted" (130); anything unexplained is a bug: "internal error: <type>: <message>" (1), its traceback
  written to a file (printed with ``KUBETUNE_DEBUG=1``).

Every text shown goes through ``redact()``: no credential is ever echoed.
"""

from __future__ import annotations

import os
import socket
import ssl
import sys
import tempfile
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

from kubetune.secrets import redact as scan

INPUT, BUG, INTERRUPTED = 2, 1, 130  # exit codes


@dataclass(frozen=True)
class Problem:
    """One mistake: ``where`` is a field (``validation_split``) or a place in a file (``spec.json:12``)."""

    where: str
    message: str
    hint: str | None = None

    def __str__(self) -> str:
        text = f"{self.where}: {self.message}"
        return f"{text} ({self.hint})" if self.hint else text


class KubetuneError(Exception):
    """Raised with every problem found, so the user can fix them all in one go."""

    def __init__(self, problems: list[Problem], title: str = "invalid input"):
        self.problems = list(problems)
        self.title = title
        super().__init__(self.report())

    def report(self) -> str:
        lines = [f"{self.title}: {len(self.problems)} problem(s)"]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


class Failure(KubetuneError):
    """An environment or network failure, on one line: ``cannot reach http://host:8888: connection refused``."""

    def __init__(self, where: str, message: str, hint: str | None = None, title: str = ""):
        super().__init__([Problem(where, message, hint)], title)

    def report(self) -> str:
        problem = self.problems[0]
        return f"{self.title} {problem}" if self.title else str(problem)


# -- never echo a credential -------------------------------------------------------------------------------

_HIDDEN: set[str] = set()  # literal values given as credentials (--token, a URL's password): never shown


def hide(value: str | None) -> None:
    """Never show ``value`` (a token given on the command line, say) in any message."""
    if value and len(value) >= 4:
        _HIDDEN.add(value)


def redact(text: str) -> str:
    """``text`` with every suspected credential and every hidden value replaced."""
    return scan(text, _HIDDEN)


def public_url(url: str) -> str:
    """``url`` without user, password, query or fragment: safe to name in a message."""
    try:
        parts = urlsplit(url if "://" in url else f"https://{url}")
        host = parts.hostname or ""
    except ValueError:  # not a URL (an unclosed IPv6 bracket): nothing of it is safe to show
        return "the URL"
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{host}{port}{parts.path.rstrip('/')}"


# -- from an exception to one line ---------------------------------------------------------------------------


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it wraps: causes, contexts, urllib3's ``reason``, requests' wrapped error."""
    seen, todo = set(), [exc]
    while todo and len(seen) < 12:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        linked = [current.__cause__, current.__context__, getattr(current, "reason", None)]
        linked += [a for a in getattr(current, "args", ()) if isinstance(a, BaseException)]
        todo += [e for e in linked if isinstance(e, BaseException)]


def _network_classes() -> tuple[type, ...]:
    classes: list[type] = []
    for module, names in (
        ("urllib3.exceptions", ("HTTPError",)),
        ("requests.exceptions", ("ConnectionError", "Timeout")),
        ("botocore.exceptions", ("HTTPClientError", "ConnectionError")),
    ):
        try:
            imported = __import__(module, fromlist=list(names))
        except ImportError:
            continue
        classes += [getattr(imported, name) for name in names]
    return tuple(classes)


def _what_happened(exc: BaseException) -> str:
    """Why a connection failed, in a few words."""
    chain = list(_chain(exc))
    names = {type(e).__name__ for e in chain}
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return "connection refused"
    if "NameResolutionError" in names or any(isinstance(e, socket.gaierror) for e in chain):
        return "host name not found"
    for e in chain:
        if isinstance(e, ssl.SSLError):
            return f"TLS error: {getattr(e, 'reason', None) or type(e).__name__}"
    if names & {"SSLError"}:
        return "TLS error"
    if names & {"ReadTimeoutError", "ConnectTimeoutError", "ConnectTimeout", "ReadTimeout", "TimeoutError", "timeout"}:
        return "timed out"
    if names & {"RemoteDisconnected", "ConnectionResetError", "ProtocolError", "IncompleteRead", "BrokenPipeError"}:
        return "the connection was closed before an answer came"
    if names & {"LocationParseError", "LocationValueError", "URLSchemeUnknown", "InvalidURL", "InvalidSchema"}:
        return "not a valid URL"
    return "connection failed"


def _where(exc: BaseException, host: str | None) -> str:
    """The host a network error was about: the one we were told, else the one the error names."""
    if host:
        return public_url(host)
    for e in _chain(exc):
        pool = vars(e).get("pool") or vars(e).get("conn")  # urllib3: a pool (MaxRetryError) or a connection
        if getattr(pool, "host", None):
            scheme = getattr(pool, "scheme", None) or ("https" if "HTTPS" in type(pool).__name__ else "http")
            port = f":{pool.port}" if getattr(pool, "port", None) else ""
            return f"{scheme}://{pool.host}{port}"
        request = getattr(e, "request", None)
        if getattr(request, "url", None):
            return public_url(request.url)
        endpoint = getattr(e, "kwargs", {}).get("endpoint_url") if isinstance(getattr(e, "kwargs", None), dict) else None
        if endpoint:
            return public_url(endpoint)
    return "the server"


def _http_failure(status: int, reason: str, detail: str, host: str) -> Failure:
    if status in (401, 403):
        return Failure(host, f"{status} {reason}".strip(), "check --token or KF_PIPELINES_TOKEN", title="not authorised at")
    message = f"answered {status} {reason}".strip() + (f": {detail}" if detail else "")
    return Failure(host, message)


def _api_detail(body) -> str:
    """The server's own message from an error body (KFP: ``error_message``; Kubernetes: ``message``)."""
    import json

    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    try:
        parsed = json.loads(body) if body else {}
    except ValueError:
        parsed = {"message": body}
    text = parsed.get("error_message") or parsed.get("message") or "" if isinstance(parsed, dict) else ""
    return " ".join(str(text).split())[:200]


def explain(exc: BaseException, host: str | None = None) -> KubetuneError | None:
    """The error a user should see for ``exc``, caused by input, environment or network; None for a bug.

    ``host``: the server being talked to, named in network errors (else taken from the error)."""
    if isinstance(exc, KubetuneError):
        return exc
    status = getattr(exc, "status", None)
    if type(exc).__name__ == "ApiException" and status == 0:  # the KFP client's way to say TLS failed
        reason = " ".join(str(getattr(exc, "reason", "")).split())
        what = f"TLS error: {reason.removeprefix('SSLError ')[:200]}" if "SSL" in reason else reason[:200]
        return Failure(_where(exc, host), what or "connection failed", title="cannot reach")
    if type(exc).__name__ == "ApiException" and isinstance(status, int) and status:
        return _http_failure(
            status, str(getattr(exc, "reason", "") or ""), _api_detail(getattr(exc, "body", None)), _where(exc, host)
        )
    response = getattr(exc, "response", None)
    if type(exc).__name__ == "HTTPError" and hasattr(response, "status_code"):  # requests' raise_for_status()
        return _http_failure(response.status_code, response.reason or "", "", _where(exc, host or response.url))
    if type(exc).__name__ == "ClientError" and isinstance(response, dict):  # botocore
        error = response.get("Error", {})
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        detail = f"{error.get('Code', '')}: {error.get('Message', '')}".strip(": ")
        return Failure(_where(exc, host), f"{getattr(exc, 'operation_name', 'request')} answered {status} {detail}".strip())
    if isinstance(exc, ValueError) and str(exc).startswith("Invalid endpoint:") and _raised_in(exc, "botocore"):
        setting = next((name for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL") if os.environ.get(name)), "S3 endpoint")
        return Failure(setting, "is not a valid endpoint URL", "give http(s)://host[:port]")
    if type(exc).__name__ in ("NoCredentialsError", "PartialCredentialsError"):
        return Failure("S3", "no usable credentials", "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    if isinstance(exc, _network_classes()) or (isinstance(exc, ConnectionError) and host):
        return Failure(_where(exc, host), _what_happened(exc), title="cannot reach")
    if isinstance(exc, OSError):
        return _os_failure(exc)
    if isinstance(exc, MemoryError):
        return Failure("memory", "ran out of memory", "give the process more memory or use smaller inputs")
    return None


def _raised_in(exc: BaseException, package: str) -> bool:
    """Whether ``exc`` was raised by code of ``package`` (its traceback's last frame)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    name = tb.tb_frame.f_globals.get("__name__", "") if tb is not None else ""
    return name == package or name.startswith(f"{package}.")


def _os_failure(exc: OSError) -> Failure:
    message = exc.strerror or str(exc) or type(exc).__name__
    if exc.filename is not None and exc.filename2 is not None:
        return Failure(f"{os.fsdecode(exc.filename)} -> {os.fsdecode(exc.filename2)}", message)
    if exc.filename is not None:
        return Failure(os.fsdecode(exc.filename), message)
    return Failure("system", message + (f" [errno {exc.errno}]" if exc.errno else ""))


@contextmanager
def talking_to(host: str | None):
    """Network and HTTP errors inside end as a one-line ``Failure`` naming ``host`` (never its credentials)."""
    try:
        yield
    except KubetuneError:
        raise
    except Exception as exc:
        failure = explain(exc, host)
        if failure is None:
            raise
        raise failure from None


def internal_error(exc: BaseException) -> str:
    """A bug: one line naming it; the traceback printed with KUBETUNE_DEBUG=1, else kept in a file."""
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    line = f"internal error: {type(exc).__name__}: {first}".rstrip(": ")
    trace = "".join(traceback.format_exception(exc))
    if os.environ.get("KUBETUNE_DEBUG") == "1":
        return f"{trace}{line}"
    try:
        with tempfile.NamedTemporaryFile("w", prefix="kubetune-error-", suffix=".txt", delete=False) as file:
            file.write(redact(trace))
        return f"{line} (a bug in kubetune; traceback in {file.name})"
    except OSError:
        return f"{line} (a bug in kubetune; KUBETUNE_DEBUG=1 prints the traceback)"


def outcome(exc: BaseException) -> tuple[int, str]:
    """The exit code and the (redacted) text a user sees when ``exc`` ends a command or a step."""
    if isinstance(exc, KeyboardInterrupt):
        return INTERRUPTED, "interrupted"
    known = explain(exc)
    if known is not None:
        return INPUT, redact(known.report())
    return BUG, redact(internal_error(exc))


@contextmanager
def reported():
    """For a pipeline step: whatever ends it ends with one report on stderr and its exit code, not a traceback.

    Input, environment and network failures: exit code 2; Ctrl-C: 130; a bug: 1 (see ``outcome``)."""
    try:
        yield
    except (Exception, KeyboardInterrupt) as exc:
        code, text = outcome(exc)
        print(text, file=sys.stderr, flush=True)
        raise SystemExit(code) from None
