"""The typer application. Commands live one per module; heavy imports happen inside them."""

from __future__ import annotations

import os
import sys

import typer

from nlfit.cli import checkjac, listing
from nlfit.cli import fit as fit_command
from nlfit.cli import generate as generate_command
from nlfit.cli import predict as predict_command

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

app.command("fit", no_args_is_help=True)(fit_command.fit)
app.command("generate", no_args_is_help=True)(generate_command.generate)
app.command("predict", no_args_is_help=True)(predict_command.predict)
app.command("check-jac", no_args_is_help=True)(checkjac.check_jac)
app.command("models")(listing.models)
app.command("methods")(listing.methods)


def main() -> None:
    """Console entry point: a closed stdout pipe (``| head``) ends quietly with exit 0."""
    try:
        app()
    except BrokenPipeError:
        _silence_stdout()
        sys.exit(0)
    except KeyboardInterrupt:
        sys.stderr.write("nlfit: interrupted\n")
        sys.exit(130)
    except Exception as exc:  # a bug in nlfit, not bad input: still one line unless --debug
        if "--debug" in sys.argv or os.environ.get("NLFIT_DEBUG", "") not in ("", "0"):
            raise
        message = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        sys.stderr.write(f"nlfit: internal error: {message} (run with --debug for the traceback)\n")
        sys.exit(70)


def _silence_stdout() -> None:
    # Python flushes stdout again at exit; point it at /dev/null so that flush cannot fail.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
