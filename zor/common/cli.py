"""The one rule for how a command-line tool of the toolkit ends on an error.

Every CLI (``zor-export``, ``zor-run``, ``zor-bench``, ``zor-devices``) wraps its
commands in :func:`cli_errors`: a :class:`~zor.common.errors.ZorError` ends the command
with the exit code its class carries (``exit_code``) and its message on stderr, never
with a traceback:

    exit 2   usage error (click's ``UsageError``: the usage line, then ``Error: message``)
    exit 1   failure (``Error: message``, then the failures of an attached report, if any)

Example:
    >>> import click
    >>> from click.testing import CliRunner
    >>> from zor.common.errors import ConfigError
    >>> @click.command()
    ... @cli_errors
    ... def cmd():
    ...     raise ConfigError("threads: expected a positive int, got 0")
    >>> r = CliRunner().invoke(cmd, [])
    >>> r.exit_code, r.output.splitlines()[-1]
    (2, 'Error: threads: expected a positive int, got 0')
"""

from __future__ import annotations

import functools
from typing import Any, Callable, TypeVar

import click

from .errors import ZorError

__all__ = ["cli_errors", "report_failures"]

F = TypeVar("F", bound=Callable[..., Any])


def report_failures(exc: BaseException, skip: int = 5) -> list[str]:
    """The failure lines of an error's attached report (``exc.report["failures"]``) past the first
    ``skip`` (which the message itself already names)."""
    report = getattr(exc, "report", None)
    failures = report.get("failures", []) if isinstance(report, dict) else []
    return [str(line) for line in failures[skip:]] if isinstance(failures, list) else []


def cli_errors(fn: F) -> F:
    """Wrap a click command so a ZorError ends it with its class's exit code (see the module)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ZorError as exc:
            if exc.exit_code == 2:
                raise click.UsageError(str(exc)) from None
            click.echo(f"Error: {exc}", err=True)
            for line in report_failures(exc):
                click.echo(f"  {line}", err=True)
            raise click.exceptions.Exit(exc.exit_code) from None

    return wrapper  # type: ignore[return-value]
