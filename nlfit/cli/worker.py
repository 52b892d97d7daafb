"""``nlfit worker start|stop|status``: the resident worker (``nlfit.worker``) by hand."""

from __future__ import annotations

import os
import sys
import time
from typing import Annotated

import typer

from nlfit import client
from nlfit.cli.common import error_line, handle_errors
from nlfit.errors import OptionError

app = typer.Typer(
    help=(
        "The resident worker: a background process that keeps nlfit warm, so a command takes a tenth of a second. "
        "The first command starts it; it exits after 10 idle minutes. NLFIT_WORKER=off (or --no-worker) runs without it."
    ),
    no_args_is_help=True,
    rich_markup_mode=None,
)


def _folder(create: bool = False) -> str:
    directory = client.folder(create=create)
    if directory is None:
        where = os.environ.get("NLFIT_WORKER_DIR") or "the worker's folder"
        if not os.path.isabs(where) and where != "the worker's folder":
            raise OptionError(f"NLFIT_WORKER_DIR={where!r} is not an absolute path; name the worker's folder by its absolute path")
        raise OptionError(f"{where} is missing or not private to this user (a folder of mode 0700 you own); no worker can run there")
    return directory


def _sockets(directory: str) -> list[str]:
    return sorted(os.path.join(directory, n) for n in os.listdir(directory) if n.startswith("worker-") and n.endswith(".sock"))


@app.command("start")
@handle_errors
def start(
    idle: Annotated[float | None, typer.Option("--idle", help="Exit after this many idle seconds (default $NLFIT_WORKER_IDLE or 600).")] = None,
) -> None:
    """Start a worker for this installation (if none runs) and wait until it listens."""
    if idle is not None and not idle > 0:
        error_line(f"--idle must be a number > 0; got {idle:g}")
        raise typer.Exit(2)
    directory = _folder(create=True)
    path = client.socket_path(directory)
    if len(os.fsencode(path)) > client.MAX_SOCKET_PATH:
        raise OptionError(f"the socket path {path!r} is longer than {client.MAX_SOCKET_PATH} bytes; choose a shorter NLFIT_WORKER_DIR")
    status = client.control(path, "status")
    if status is None:
        pid = client.spawn(directory, idle)
        deadline = time.time() + 60
        while status is None and time.time() < deadline:
            time.sleep(0.05)
            status = client.control(path, "status")
            finished, _ = os.waitpid(pid, os.WNOHANG)
            if finished and status is None:
                error_line("the worker could not start (run 'python -m nlfit.worker' to see why)")
                raise typer.Exit(1)
        if status is None:
            error_line("the worker did not start within 60 s")
            raise typer.Exit(1)
    sys.stdout.write(f"worker {status['pid']} listening on {status['socket']} (exits after {status['idle']:g} idle seconds)\n")


@app.command("stop")
@handle_errors
def stop() -> None:
    """Stop every worker in the folder (this installation's and older ones)."""
    explicit = os.environ.get("NLFIT_WORKER_DIR")
    directory = _folder() if explicit and not os.path.isabs(explicit) else client.folder()
    stopped = 0
    for path in _sockets(directory) if directory else []:
        if client.control(path, "stop") is not None:
            stopped += 1
        else:
            client._unlink(path)  # nobody answers: a socket left behind
    sys.stdout.write(f"stopped {stopped} worker{'' if stopped == 1 else 's'}\n")


@app.command("status")
@handle_errors
def status() -> None:
    """Say which workers run, and where their sockets are. Exit 0 if this installation's runs, else 1."""
    explicit = os.environ.get("NLFIT_WORKER_DIR")
    directory = _folder() if explicit and not os.path.isabs(explicit) else client.folder()
    mine = None if directory is None else client.socket_path(directory)
    found = False
    for path in _sockets(directory) if directory else []:
        reply = client.control(path, "status")
        if reply is None:
            continue
        current = path == mine
        found |= current
        state = "running a command" if reply["running"] else "idle"
        if current:
            which = "this installation"
        elif client.installation(client.path_identity(path)) == client.installation(client.path_identity(mine)):
            which = "this installation, for processes with other settings, rights or limits"
        else:
            which = "another installation (stale)"
        sys.stdout.write(f"worker {reply['pid']}: {which}, {state}, {reply['served']} commands served, up {reply['uptime']:.0f} s, socket {path}\n")
    if not found:
        sys.stdout.write(f"no worker for this installation{'' if directory is None else f' (folder {directory})'}\n")
    raise typer.Exit(0 if found else 1)
