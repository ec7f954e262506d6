"""``kubetune verify``: check an exported model against its manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kubetune.errors import Failure, redact
from kubetune.oci.reference import public


def verify(
    uri: Annotated[str, typer.Argument(help="An export: a local directory, s3://bucket/prefix or an oci:// modelcar.")],
) -> None:
    """Check an exported model against its manifest: exit code 0 when complete and intact, else 2 with
    one line per problem (a missing, changed or unlisted file, a missing or damaged manifest).

    Example: kubetune verify s3://models/chat/v1
    """
    from kubetune.steps.export import verify as check

    if not uri.startswith(("s3://", "oci://")) and not Path(uri).is_dir():
        raise Failure(uri, "is not an existing folder" if not Path(uri).exists() else "is not a folder")
    shown = public(uri) if uri.startswith("oci://") else uri  # never a credential smuggled into the reference
    problems = check(uri)
    if problems:
        for problem in problems:
            typer.echo(redact(problem if problem.startswith(shown) else f"{shown}: {problem}"), err=True)
        raise typer.Exit(code=2)
    typer.echo(f"{shown}: complete")
