"""The typer application. Commands live one per module; heavy imports happen inside them."""

from __future__ import annotations

import errno
import os
import sys
from typing import Annotated

import typer

from nlfit.cli import checkjac, listing
from nlfit.cli import compare as compare_command
from nlfit.cli import fit as fit_command
from nlfit.cli import generate as generate_command
from nlfit.cli import predict as predict_command
from nlfit.cli import refit as refit_command
from nlfit.cli import worker as worker_command
from nlfit.cli.common import PipeClosed
from nlfit.cli.streams import silence_stdout

app = typer.Typer(
    name="nlfit",
    help=(
        "Nonlinear least-squares fitting from the command line.\n\n"
        "Examples:\n\n"
        "  nlfit generate runge --noise 0.5 --seed 0 > runge.csv\n\n"
        "  nlfit fit runge.csv --model rational --method lm\n\n"
        "  nlfit generate runge | nlfit fit - --model chebyshev:11 --format json | jq .params"
    ),
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        from nlfit import provenance

        found = provenance.versions()
        typer.echo(f"nlfit {provenance.nlfit_version()}")
        typer.echo(", ".join(f"{name} {version or 'not installed'}" for name, version in found.items()))
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print nlfit's version and its key dependencies' and exit.")
    ] = False,
) -> None:
    """Nonlinear least-squares fitting from the command line."""


app.command("fit", no_args_is_help=True)(fit_command.fit)
app.command("generate", no_args_is_help=True)(generate_command.generate)
app.command("predict", no_args_is_help=True)(predict_command.predict)
app.command("refit", no_args_is_help=True)(refit_command.refit)
app.command("check-jac", no_args_is_help=True)(checkjac.check_jac)
app.command("compare", no_args_is_help=True)(compare_command.compare)
app.command("models")(listing.models)
app.command("methods")(listing.methods)
app.add_typer(worker_command.app, name="worker")


_COMMAND: list = []


def command():
    """The click command of ``app``, built once per process (typer builds it from the
    functions' signatures on every call: 30 ms, a fifth of a default fit in the worker)."""
    if not _COMMAND:
        _COMMAND.append(typer.main.get_command(app))
    return _COMMAND[0]


def run(prog_name: str | None = None) -> int:
    """Run the command line; the exit code. Bad input has already been reported in one line
    (``handle_errors``); a closed stdout pipe (``| head``) ends quietly with exit 0; a bug in
    nlfit is one line and exit 70 unless --debug."""
    try:
        command()(prog_name=prog_name, standalone_mode=True)
    except SystemExit as exit_:
        code = exit_.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except (BrokenPipeError, PipeClosed):  # '| head': the reader has what it wanted
        silence_stdout()
        return 0
    except OSError as exc:
        if exc.errno not in OUTPUT_ERRORS:
            return _internal_error(exc)
        silence_stdout()  # a full disk or a dead terminal: say so, not "internal error"
        sys.stderr.write(f"nlfit: error: cannot write: {exc.strerror or exc}\n")
        return 2
    except Exception as exc:
        return _internal_error(exc)
    return 0


# Errors of the output device (a full /dev/full, a quota, a hung-up terminal, a closed
# descriptor) while a table or help text is printed: one line and exit 2.
OUTPUT_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EBADF, errno.EROFS, errno.EFBIG}


def _internal_error(exc: Exception) -> int:
    """A bug in nlfit, not bad input: still one line unless --debug."""
    if "--debug" in sys.argv or os.environ.get("NLFIT_DEBUG", "") not in ("", "0"):
        raise exc
    message = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
    sys.stderr.write(f"nlfit: internal error: {message} (run with --debug for the traceback)\n")
    return 70
