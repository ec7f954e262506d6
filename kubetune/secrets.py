"""Secrets travel by reference only: an environment variable or a Kubernetes secret, never a value.

One scanner finds credentials wherever they hide: ``scan_document`` walks every key and value of a spec
(nested objects and lists), ``scan_text`` checks any text (a file about to be written, a log line) and
``redact`` hides what they find. Two kinds of evidence:

- a key whose name means a credential (``hub_token``, ``password``, ``aws_secret_access_key``, ...; a
  vocabulary token such as ``pad_token`` or ``eos_token`` is not one) holding anything but null, false or empty;
- a value (or a key) shaped like one: Hugging Face, GitHub, GitLab, Slack, npm, Stripe, Google and
  OpenAI-style tokens, AWS access key ids and secret keys, W&B API keys, JWTs, PEM blocks, bearer
  tokens, URLs with a user or password, and URLs with a token-like query parameter.

Two shapes are ambiguous alone and count only next to a name that suggests them (a key, or the text just
before): 40 hex digits (a W&B key, but also a git revision) and 40 base64 characters (an AWS secret key;
without an aws-ish name only when mixed-case with digits, varied enough not to be a word and not shaped like
a path: see ``_unambiguous_aws_secret``).
Nothing here ever returns or prints a value it found: only the names of the shapes.
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Every variable the pipelines' secrets may hold: name -> (the secret's kind, the service a spec's reference to it
# serves; None: not one the training step consumes). Each kind's secret name is a pipeline parameter
# (``s3_secret``, ``hf_secret``, ``tracking_secret``, ``registry_secret``); the key in it is the variable's name.
SECRET_VARIABLES: dict[str, tuple[str, str | None]] = {
    "WANDB_API_KEY": ("tracking", "Weights & Biases"),
    "HF_TOKEN": ("hf", "Hugging Face hub"),
    "AWS_ACCESS_KEY_ID": ("s3", "S3"),
    "AWS_SECRET_ACCESS_KEY": ("s3", "S3"),
    "AWS_SESSION_TOKEN": ("s3", "S3"),
    "AWS_ENDPOINT_URL": ("s3", None),
    "AWS_DEFAULT_REGION": ("s3", None),
    "MLFLOW_TRACKING_TOKEN": ("tracking", "MLflow"),
    "MLFLOW_TRACKING_USERNAME": ("tracking", "MLflow"),
    "MLFLOW_TRACKING_PASSWORD": ("tracking", "MLflow"),
    "MODEL_REGISTRY_TOKEN": ("registry", None),
}
# The secrets a spec may reference (environment variables the training step knows how to consume): name -> service
KNOWN_SECRETS = {name: service for name, (_, service) in SECRET_VARIABLES.items() if service}
# The pipelines' secrets: kind -> {key in the Kubernetes secret: environment variable}
SECRET_KEYS = {
    kind: {name: name for name, (of, _) in SECRET_VARIABLES.items() if of == kind}
    for kind in ("s3", "hf", "tracking", "registry")
}
# The secrets each step needs, by kind: mounted on the pipelines' tasks, and on every node of a TrainJob ("train")
STEP_SECRETS = {
    "validate": ("s3", "hf"),  # the memory plan reads an s3:// or hub model's config.json
    "prepare": ("s3", "hf"),
    "train": ("s3", "hf", "tracking"),  # an s3:// or hub model, the trackers' credentials
    "evaluate": ("s3", "hf"),  # an s3:// or hub base model
    "export": ("s3", "hf"),
    "register": ("registry",),
}

REDACTED = "<redacted>"
HINT = 'put a reference under "secrets" instead, e.g. "secrets": {"HF_TOKEN": {"secret": "hf-token", "key": "token"}}'

_ENV_NAME = r"^[A-Z_][A-Z0-9_]*$"
_K8S_NAME = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"


class SecretRef(BaseModel):
    """Where the training pod finds a secret: ``{"env": "VAR"}`` or ``{"secret": "name", "key": "k"}``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    env: str | None = Field(None, pattern=_ENV_NAME, max_length=253, description="Environment variable already set in the pod.")
    secret: str | None = Field(None, pattern=_K8S_NAME, max_length=253, description="Kubernetes Secret name.")
    key: str | None = Field(None, pattern=r"^[-._a-zA-Z0-9]+$", max_length=253, description="Key inside the Kubernetes Secret.")

    @model_validator(mode="after")
    def _one_kind(self) -> SecretRef:
        if (self.env is None) == (self.secret is None):
            raise ValueError('give exactly one of {"env": ...} or {"secret": ..., "key": ...}')
        if self.secret is not None and self.key is None:
            raise ValueError('a Kubernetes secret reference needs "key"')
        return self


# -- key names ----------------------------------------------------------------------------------------------

# Keys whose value is a credential by name.
_CREDENTIAL_KEY = re.compile(
    r"api_?key|apikey|api-key|passw(or)?d|(^|[_-])pwd$|secret|credential|access_?key|private_?key|"
    r"auth_?token|authorization|cookie|signature|(^|[_-])sig$|"
    r"(^|[_-])(hub|hf|auth|access|api|bearer|tracking|session|github|gh|gitlab|refresh|id|wandb|mlflow|registry|"
    r"kfp|pipelines|slack|openai|s3|aws|security|client|private)[_-]?token$|^token$",
    re.IGNORECASE,
)
# Tokens of a vocabulary and other fields named like credentials that are not ones.
_NOT_CREDENTIAL_KEY = re.compile(
    r"^(pad|eos|bos|unk|sep|cls|mask|chat|im_start|im_end|additional_special)_tokens?(_id)?$|_token_ids?$|"
    r"^(use|trust)_",
    re.IGNORECASE,
)


def credential_key(key: str) -> bool:
    """Whether a key's name means its value is a credential (``hub_token``: yes; ``pad_token``: no)."""
    return bool(_CREDENTIAL_KEY.search(key)) and not _NOT_CREDENTIAL_KEY.search(key)


# -- value shapes -------------------------------------------------------------------------------------------

_W = "A-Za-z0-9_"  # word characters: a token starts after none of them


def _token(prefix: str, rest: str, boundary: str = _W) -> str:
    """``prefix`` + ``rest`` not preceded by a ``boundary`` character. The prefix comes first in the pattern
    (the lookbehind after it) so that the regex engine can search for it quickly."""
    return f"{prefix}(?<![{boundary}]{prefix})" + rest


def _word(word: str) -> str:
    """``word=`` (any case, after a non-word character): the ``=`` first, for a fast search."""
    return f"=(?<=(?i:{word})=)(?<![{_W}](?i:{word})=)"


# every shape: one or more patterns, each searched on its own (one big alternation is several times slower)
_SHAPES: dict[str, list[str]] = {
    "Hugging Face token": [_token("hf_", r"[A-Za-z0-9]{30,}+(?![A-Za-z0-9_])"), _token("api_org_", r"[A-Za-z0-9]{30,}+")],
    "GitHub token": [_token("gh", r"[pousr]_[A-Za-z0-9]{30,}"), _token("github_pat_", r"[A-Za-z0-9_]{30,}")],
    "GitLab token": [_token("gl", r"(?:pat|ptt|dt|rt)-[A-Za-z0-9_-]{20,}")],
    "Slack token": [_token("xox", r"[abposre]-[A-Za-z0-9-]{10,}")],
    "npm token": [_token("npm_", r"[A-Za-z0-9]{36}(?![A-Za-z0-9_])")],
    "Stripe key": [_token("[srp]", r"k_(?:live|test)_[A-Za-z0-9]{16,}")],
    "Google API key": [_token("AIza", r"[0-9A-Za-z_-]{35}")],
    "Anthropic key": [_token("sk-ant-", r"[A-Za-z0-9_-]{20,}", _W + "-")],
    "SendGrid key": [_token("SG", r"\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}")],
    "DigitalOcean token": [_token("do", r"[opr]_v1_[a-f0-9]{64}")],
    "OpenAI-style key": [_token("sk-", r"(?=[A-Za-z0-9_-]*[0-9])(?=[A-Za-z0-9_-]*[A-Z])[A-Za-z0-9_-]{20,}", _W + "-")],
    "AWS access key id": [
        _token("A", r"(?:KIA|SIA|BIA|CCA|GPA|IDA|IPA|NPA|NVA|PKA|ROA|3T[A-Z0-9])[A-Z0-9]{12,20}+(?![A-Z0-9])", "A-Z0-9")
    ],
    "JWT": [_token("eyJ", r"[A-Za-z0-9_-]{5,}+\.[A-Za-z0-9_-]{5,}+\.[A-Za-z0-9_-]*+")],
    "PEM block": [r"-----BEGIN [A-Z0-9 ]{0,60}-----"],
    "bearer token": [_token("[Bb]", r"earer\s++(?=[A-Za-z0-9._~+/=-]*[0-9])[A-Za-z0-9._~+/=-]{16,}")],
    "URL with credentials": [r"://[^/?#\s@]*+@"],  # the scheme before it is found in ``_scheme_start``
    "URL with a credential parameter": [
        r"[?&;#](?i:access_token|id_token|refresh_token|auth_token|token|auth|sig|signature|x-amz-signature|"
        r"x-amz-credential|x-amz-security-token|x-goog-signature|x-goog-credential|api_key|apikey|api-key|key|"
        r"password|passwd|pwd|secret|client_secret|private_token|sas_token|code)=[^&#\s]"
    ],
    "connection-string password": [_word(w) + r"[^;&\s]" for w in ("password", "pwd", "accountkey", "sharedaccesskey")],
    "W&B local key": [_token("local-", r"[0-9a-f]{40}(?![A-Za-z0-9_])")],
    # ambiguous alone (see ``_plausible``)
    "W&B API key": [_token("[0-9a-f]", r"[0-9a-f]{39}(?![0-9A-Za-z])", "0-9A-Za-z")],
    "AWS secret access key": [_token("[A-Za-z0-9/+]", r"[A-Za-z0-9/+]{39}(?![A-Za-z0-9/+=])", "A-Za-z0-9/+=")],
}
_PATTERNS = [(name, re.compile(p)) for name, patterns in _SHAPES.items() for p in patterns]
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
_CONTEXT = {  # what a name next to an ambiguous shape must say
    "W&B API key": re.compile(r"wandb|api[_-]?key|apikey", re.IGNORECASE),
    "AWS secret access key": re.compile(r"aws|secret", re.IGNORECASE),
}


def _unambiguous_aws_secret(token: str) -> bool:
    """40 base64 characters that are a random string, not a path or a word: mixed case, digits, at least 22
    different characters, and not shaped like a path (3 or more slashes, or a leading one and another)."""
    slashes = token.count("/")
    return (
        any(c.isupper() for c in token)
        and any(c.islower() for c in token)
        and any(c.isdigit() for c in token)
        and len(set(token)) >= 22
        and slashes < 3
        and not (token.startswith("/") and slashes > 1)
    )


def _plausible(name: str, token: str, context: str) -> bool:
    if name not in _CONTEXT:
        return True
    if _CONTEXT[name].search(context):
        return name != "AWS secret access key" or not re.fullmatch(r"[0-9a-f]+|[a-z/]+", token)
    return name == "AWS secret access key" and _unambiguous_aws_secret(token)


@dataclass(frozen=True)
class Found:
    shape: str
    start: int
    end: int
    disguised: bool = False  # found in the word's undisguised form: the whole word is the credential's span


def _scheme_start(text: str, colon: int) -> int | None:
    """Where the URL scheme ending at ``colon`` starts (a letter, then up to 30 of ``[A-Za-z0-9+.-]``)."""
    start = colon
    while start > max(0, colon - 31) and (text[start - 1].isascii() and (text[start - 1].isalnum() or text[start - 1] in "+.-")):
        start -= 1
    match = _SCHEME.search(text, start, colon)
    return match.start() if match and match.end() == colon else None


def find(text: str, context: str | None = None) -> list[Found]:
    """Every credential shape in ``text``, in order, also disguised: in look-alike characters (full-width,
    zero-width spaces: NFKC with format characters removed) or percent-encoded (decoded up to 3 times; found
    as its whole word). ``context``: the name the text is under (a key); None: the text just before each
    match is its context (free text, a file)."""
    found = _find_plain(text, context)
    if not text.isascii():
        found += _find_look_alike(text, context)
    if "%" in text:
        found += _find_encoded(text, context)
    return sorted(found, key=lambda f: (f.start, -f.end))


def _undisguised(char: str) -> str:
    """A character as it looks in ASCII where it has a compatibility form (``ｈ``: ``h``); a format character
    (zero-width space, joiner, direction mark) is nothing."""
    return "".join(c for c in unicodedata.normalize("NFKC", char) if unicodedata.category(c) != "Cf")


def _look_alikes(text: str) -> dict[int, str]:
    """``str.translate`` table undisguising the non-ASCII characters of ``text`` that change."""
    table = {}
    for char in set(text):
        if not char.isascii() and (plain := _undisguised(char)) != char:
            table[ord(char)] = plain
    return table


def _find_look_alike(text: str, context: str | None) -> list[Found]:
    """Credentials written in look-alike characters, each with its exact span in ``text``."""
    table = _look_alikes(text)
    if not table:
        return []
    found = _find_plain(text.translate(table), context)
    if not found:
        return []
    origin = []  # the index in ``text`` of each character of the undisguised text
    for index, char in enumerate(text):
        origin += [index] * len(table.get(ord(char), char))
    origin.append(len(text))
    return [Found(f.shape, origin[f.start], origin[f.end - 1] + 1, disguised=True) for f in found]


_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
_PEM_END = re.compile(r"-----END [A-Z0-9 ]{0,60}-----")
_WORD_END = re.compile(r"[^\s\"'`<>\[\]{}]*+")
_NOT_WORD = frozenset(" \t\n\r\f\v\"'`<>[]{}")


def _encoded_words(text: str) -> Iterator[tuple[int, int]]:
    """Start and end of each word holding a percent-escape; linear in ``text``."""
    done = 0
    for mark in _ESCAPE.finditer(text):
        if mark.start() < done:
            continue
        start = mark.start()
        while start > done and text[start - 1] not in _NOT_WORD:
            start -= 1
        done = _WORD_END.match(text, mark.start()).end()
        yield start, done


def _decoded_forms(word: str) -> list[str]:
    """Each percent-decoding of ``word`` (at most 3), the last one also undisguised."""
    forms, current = [], word
    for _ in range(3):
        if "%" not in current or (decoded := unquote(current)) == current:
            break
        forms.append(current := decoded)
    if forms and not current.isascii():
        forms.append(current.translate(_look_alikes(current)))
    return forms


def _find_encoded(text: str, context: str | None) -> list[Found]:
    """Percent-encoded credentials, each found as the words it spans. The forms of every encoded word are
    scanned in one pass (one line each), then mapped back to their words."""
    lines, starts, words = [], [], []
    offset = 0
    for start, end in _encoded_words(text):
        for form in _decoded_forms(text[start:end]):
            lines.append(form)
            starts.append(offset)
            words.append((start, end))
            offset += len(form) + 1
    found = {}
    for f in _find_plain("\n".join(lines), context):
        start = words[bisect.bisect_right(starts, f.start) - 1][0]
        end = words[bisect.bisect_right(starts, f.end - 1) - 1][1]
        found[(start, end, f.shape)] = Found(f.shape, start, end, disguised=True)
    return list(found.values())


def _find_plain(text: str, context: str | None) -> list[Found]:
    found = []
    for name, pattern in _PATTERNS:
        for match in pattern.finditer(text):
            start = match.start()
            if name == "URL with credentials":
                start = _scheme_start(text, start)
                if start is None:
                    continue
            near = context if context is not None else text[max(0, start - 40) : start]
            if _plausible(name, match.group(), near):
                found.append(Found(name, start, match.end()))
    return found


def scan_text(text: str) -> list[str]:
    """Names of the credential shapes in ``text`` (sorted, each once); never the values."""
    return sorted({f.shape for f in find(text)})


def redact(text: str, hidden: tuple[str, ...] | list[str] | set[str] = ()) -> str:
    """``text`` with every suspected credential replaced by ``<redacted>``; a URL keeps its scheme and host,
    a query parameter its name. ``hidden``: literal values (4 characters or more) also to hide."""
    for value in sorted((v for v in hidden if len(v) >= 4), key=len, reverse=True):
        text = text.replace(value, REDACTED)
    parts, last = [], 0
    for f in find(text):
        if f.start < last:
            continue
        match = text[f.start : f.end]
        if f.shape == "PEM block":  # the whole block, to its END line (or the end of the text)
            end = _PEM_END.search(text, f.end)
            parts += [text[last : f.start], REDACTED]
            last = end.end() if end else len(text)
            continue
        if f.disguised:  # its span: to the end of its word (a credential parameter's value, say)
            parts += [text[last : f.start], REDACTED]
            last = _WORD_END.match(text, f.end).end()
            continue
        if f.shape == "URL with credentials":
            scheme = match.split("://", 1)[0]
            parts += [text[last : f.start], f"{scheme}://{REDACTED}@"]
        elif f.shape in ("URL with a credential parameter", "connection-string password"):
            name = match[: match.index("=") + 1]
            end = re.compile(r"[^&#;\s]*").match(text, f.end).end()
            parts += [text[last : f.start], name + REDACTED]
            last = end
            continue
        else:
            parts += [text[last : f.start], REDACTED]
        last = f.end
    parts.append(text[last:])
    return "".join(parts)


# -- documents ----------------------------------------------------------------------------------------------

_SAFE_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_ .\-]{0,99}")


_GLUED = re.compile(r"(?:hf_|gh[pousr]_|github_pat_|sk-|xox|AKIA|ASIA|eyJ)[A-Za-z0-9_-]{16}|[A-Za-z0-9]{24}")


def shown(key: Any) -> str:
    """A key as it may appear in a message: itself when it is a plain name, else ``<redacted>`` (a name
    holding a credential's shape, even glued to other characters, or a long random-looking run)."""
    key = str(key)
    return key if _SAFE_KEY.fullmatch(key) and not _GLUED.search(key) and not find(key) else REDACTED


@dataclass(frozen=True)
class Suspect:
    """A suspected credential: where it is (keys shown safely) and why; never the value."""

    where: str
    reason: str


def _literals(value: Any) -> Iterator[str]:
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, dict):
            todo += item.values()
        elif isinstance(item, list):
            todo += item
        elif isinstance(item, str):
            yield item
        elif isinstance(item, (int, float)) and not isinstance(item, bool):
            yield str(item)


def scan_document(document: Any, path: str = "", names: bool = True) -> tuple[list[Suspect], set[str]]:
    """Every suspected credential in ``document`` (keys and values, nested objects and lists), found
    iteratively, and the literals to hide from every message about it.

    ``names=False`` skips the key-name evidence (for the ``secrets`` section, whose keys name references).
    """
    suspects: list[Suspect] = []
    hidden: set[str] = set()
    todo: list[tuple[str, str, Any]] = [(path, "", document)]
    while todo:
        where, name, value = todo.pop()
        if isinstance(value, dict):
            children = []
            for k, v in value.items():
                k = str(k)
                child = f"{where}.{shown(k)}" if where else shown(k)
                shapes = sorted({f.shape for f in find(k, context=name)})
                if shapes:
                    suspects.append(Suspect(child, f"is a key that looks like a credential ({', '.join(shapes)})"))
                    hidden.add(k)
                if names and credential_key(k) and v not in (None, False, "", [], {}):
                    suspects.append(Suspect(child, "is named like a credential and holds a value"))
                    hidden.update(_literals(v))
                else:
                    children.append((child, k, v))
            todo += reversed(children)  # a stack: reversed, so that the walk follows the document's order
        elif isinstance(value, list):
            todo += reversed([(f"{where}[{i}]", name, v) for i, v in enumerate(value)])
        elif isinstance(value, str):
            shapes = sorted({f.shape for f in find(value, context=name)})
            if shapes:
                suspects.append(Suspect(where or "spec", f"looks like a credential ({', '.join(shapes)})"))
                hidden.add(value)
    return suspects, hidden


def scan_spec(document: Any, path: str = "") -> tuple[list[Suspect], set[str]]:
    """``scan_document`` for a spec (or a document holding one at ``path``): its ``secrets`` section holds
    references, whose keys (``HF_TOKEN``, ``secret``, ``key``) are names, so there only shapes count."""
    if not isinstance(document, dict) or not isinstance(document.get("secrets"), (dict, list, str)):
        return scan_document(document, path)
    suspects, hidden = scan_document({k: v for k, v in document.items() if k != "secrets"}, path)
    refs, more = scan_document(document["secrets"], f"{path}.secrets" if path else "secrets", names=False)
    return suspects + refs, hidden | more
