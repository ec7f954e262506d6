"""How every kubetune command line ends: the user's ``kubetune`` and the TrainJob nodes' ``kubetune-node``."""

from __future__ import annotations

import io
import sys

import click
import typer
from typer.core import TyperGroup

from kubetune.errors import outcome, redact

_BUNDLED = sys.modules[typer.BadParameter.__module__]  # the copy of click's exceptions typer bundles and raises
_USAGE = (click.ClickException, _BUNDLED.ClickException)  # a usage error (exit 2), or another error click tells
_ENDS = (click.exceptions.Exit, click.exceptions.Abort, typer.Exit, typer.Abort, BrokenPipeError)


class _Redacting:
    """A text stream that hides every suspected credential in what is written to it: whatever a command
    prints (its results, click's messages, a library's print) passes here."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text):
        return self._stream.write(redact(text) if isinstance(text, str) else text)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


class Commands(TyperGroup):
    """Every command ends the same way: whatever stops it is told on stderr and sets the exit code; no traceback.

    Input, environment and network failures: one line naming the field, file, URI or host (exit code 2);
    a usage error (a missing argument, an unknown option or command, a value of the wrong type): click's
    usage message (exit code 2); Ctrl-C: "interrupted" (130); a bug: "internal error: ..." (1).
    See ``kubetune.errors.outcome``. Nothing shown holds a credential (``redact``)."""

    def invoke(self, ctx: click.Context):
        streams = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _Redacting(sys.stdout), _Redacting(sys.stderr)
        try:
            return self._invoke(ctx)
        finally:
            sys.stdout, sys.stderr = streams

    def _invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except _ENDS:
            raise
        except _USAGE as exc:
            told = io.StringIO()
            exc.show(file=told)
            typer.echo(redact(told.getvalue()), err=True, nl=False)
            raise typer.Exit(code=exc.exit_code) from None
        except (Exception, KeyboardInterrupt) as exc:
            code, text = outcome(exc)
            typer.echo(text, err=True)
            raise typer.Exit(code=code) from None


def command_line(help: str) -> typer.Typer:
    """A command group whose commands all end as ``Commands`` says."""
    return typer.Typer(cls=Commands, help=help, no_args_is_help=True, pretty_exceptions_enable=False)
