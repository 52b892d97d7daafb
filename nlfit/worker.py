"""The resident worker: one warm process that runs nlfit commands for the client
(``nlfit.client``), so a command costs a fraction of a second instead of the seconds that
importing JAX and tracing the solver take.

``python -m nlfit.worker --folder DIR [--idle SECONDS]`` imports everything a command needs,
listens on ``DIR/worker-VERSION-HASH.sock`` (mode 0600, in a folder of mode 0700 owned by
the user) and serves until it has been idle for ``--idle`` seconds (``$NLFIT_WORKER_IDLE``,
default 600). Workers of other installations in the same folder are asked to stop.

The exchange: the client sends a header (identity, program name, arguments, working
directory, umask, the environment that changes output); the worker answers ``R`` (another
identity: refused) or, when the command's turn comes, ``G``; the client confirms with ``A``
and its descriptors 0-2 (SCM_RIGHTS), so a command waiting in the queue holds none of them;
during the command it may send ``S`` and a signal number; the worker announces each output
written to its temporary file with ``T`` (the file and its target, which the client renames
at the end or removes if the worker dies); at the end the worker sends ``X`` and the exit
code, and the client answers ``D`` once it has renamed the outputs. Control questions:
``status``, ``stop``, and ``wait`` (the status, once no command runs).

One command runs at a time, in the main thread, as it would in its own process: the
client's stdin, stdout and stderr become descriptors 0, 1 and 2, its working directory the
current one, its forwarded environment the environment, its umask the umask, and its SIGINT
or SIGTERM are raised here while the command runs (held until its handlers are in place,
dropped once it has ended; a client that disappears ends its command as SIGTERM would). A
command that waits longer than the client's patience for its turn runs in the client's own
process instead (the client gives up before it confirms: a command never runs twice). A
connection from another user (SO_PEERCRED) is closed unanswered. An exception in a command
is that command's (exit 70, as in-process); the worker goes on.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import queue
import signal
import socket
import sys
import threading
import time

from nlfit import client

DEFAULT_IDLE = 600.0  # seconds without a command after which the worker exits
ACK_SECONDS = 5.0  # how long a client may take to confirm that it still wants its turn
MAX_HEADER = 1 << 24  # bytes: an argument vector and an environment, not more
CHECK_SECONDS = 2.0  # how often an idle worker checks that its socket is still its own
WAIT_LIMIT = 300.0  # the longest a 'wait' question waits for the running command to end


class Request:
    def __init__(self, conn: socket.socket, header: dict):
        self.conn, self.header = conn, header


class Worker:
    def __init__(self, directory: str, idle: float, identity: str, context: str | None):
        self.directory, self.idle = directory, idle
        self.identity = identity  # computed before JAX was imported: JAX sets variables of its own
        self.context = context  # this process's rights and limits (client.context), as it started
        self.path = client.socket_path(directory, self.identity)
        self.requests: queue.Queue[Request] = queue.Queue()
        self.started, self.served, self.last = time.time(), 0, time.time()
        self.stopping = threading.Event()
        self.running = False  # the command's signal handlers are in place: a forwarded signal is raised
        self.current: socket.socket | None = None  # the connection whose command runs
        self.pending: int | None = None  # a signal forwarded before the command's handlers were in place
        self.abandoned = False  # the client of the running command went away before it ended
        self.quiet = threading.Event()  # set while no command runs
        self.quiet.set()
        self.lock = threading.Lock()
        self.max_mappings = _mappings_limit()
        self.watcher: threading.Thread | None = None  # the running or last command's watcher

    # -------------------------------------------------------------------- set-up
    def listen(self) -> socket.socket | None:
        """Bind the socket under a temporary name and rename it into place once it listens,
        so a client never finds a socket nobody answers. None when a live worker has it."""
        if client.connect(self.path, 1.0) is not None:
            return None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        temporary = os.path.join(self.directory, f".worker-{os.getpid()}.sock")
        client._unlink(temporary)
        mask = os.umask(0o177)
        try:
            sock.bind(temporary)
        finally:
            os.umask(mask)
        os.chmod(temporary, 0o600)
        sock.listen(64)
        os.replace(temporary, self.path)
        self.inode = os.stat(self.path).st_ino
        return sock

    def replace_others(self) -> None:
        """Stop the workers of other installations in this folder (those of this installation
        with other settings stay); remove dead sockets."""
        mine = client.installation(self.identity)
        for name in os.listdir(self.directory):
            if not (name.startswith("worker-") and name.endswith(".sock")):
                continue
            path = os.path.join(self.directory, name)
            if path == self.path:
                continue
            if client.installation(client.path_identity(path)) == mine and client.control(path, "status", timeout=2.0) is not None:
                continue
            if client.control(path, "stop", timeout=2.0) is None:
                client._unlink(path)

    # ------------------------------------------------------------------- serving
    def accept_loop(self, sock: socket.socket) -> None:
        """Each connection is admitted in its own thread: a client that connects and says
        nothing delays nobody else."""
        while not self.stopping.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            accepted = client._boot_seconds()
            try:
                threading.Thread(target=self.admit_safely, args=(conn, accepted), daemon=True).start()
            except Exception:  # no thread to be had (a flood of connections): this one is dropped, the loop goes on
                conn.close()

    def admit_safely(self, conn: socket.socket, accepted: float) -> None:
        try:
            self.admit(conn, accepted)
        except Exception:  # a broken client never stops the worker
            _log("a connection failed")
            conn.close()

    def admit(self, conn: socket.socket, accepted: float) -> None:
        if client.peer_uid(conn) != os.getuid():
            conn.close()  # another user: no answer at all
            return
        conn.settimeout(ACK_SECONDS)
        header = _receive_header(conn)
        if header.get("identity") != self.identity:
            conn.sendall(b"R")
            conn.close()
            return
        command = header.get("control")
        if command is None and not self.same_rights(conn, accepted):
            conn.sendall(b"R")  # the client runs the command itself, with its own rights
            conn.close()
            return
        if command is not None:
            if command == "wait":  # answered once no command runs (tests and scripts wait on it, not on a clock)
                self.quiet.wait(WAIT_LIMIT)
            reply = {"pid": os.getpid(), "identity": self.identity, "socket": self.path, "idle": self.idle,
                     "uptime": time.time() - self.started, "served": self.served, "running": self.running}  # fmt: skip
            conn.sendall(json.dumps(reply).encode())
            conn.close()
            if command == "stop":
                self.stop()
            return
        self.requests.put(Request(conn, header))

    def same_rights(self, conn: socket.socket, accepted: float) -> bool:
        """Whether the process at the other end has exactly this worker's rights and limits,
        as the kernel reports them (not as the client says; a pid reused since the client
        connected does not count, see ``client.peer_context``): the same ids, capabilities,
        namespaces, root, resource limits and cgroup. Otherwise a command run here could read
        a file the client may not, see another mount namespace's files, or outlive a limit."""
        return self.context is not None and client.peer_context(conn, accepted) == self.context

    def stop(self) -> None:
        self.stopping.set()
        self.requests.put(None)

    def serve(self) -> None:
        while not self.stopping.is_set():
            left = self.last + self.idle - time.time()
            if left <= 0:
                return  # idle long enough
            try:
                request = self.requests.get(timeout=min(left, CHECK_SECONDS))
            except queue.Empty:
                if not self.still_listed():
                    return  # our socket was removed or replaced: nobody can reach us any more
                continue
            if request is None:
                return
            self.quiet.clear()
            try:
                self.run(request)
            finally:
                self.quiet.set()
            self.last = time.time()
            if _mappings() > self.max_mappings:
                _log("retiring: too many memory mappings held by compiled programs")
                if self.watcher is not None:
                    self.watcher.join(WAIT_LIMIT)  # the client renames its outputs first
                return

    def still_listed(self) -> bool:
        try:
            return os.stat(self.path).st_ino == self.inode
        except OSError:
            return False

    def run(self, request: Request) -> None:
        """Your turn (G); the client confirms (A) and sends its descriptors with it, so a
        command that gave up waiting left none here. Then the command: each output it
        finishes is announced (T, the temporary file and its target) for the client to
        rename, or to remove should this worker die; then X and the exit code."""
        conn = request.conn
        try:
            conn.sendall(b"G")
            fds = _receive_descriptors(conn)
        except OSError:  # it gave up waiting and runs the command itself
            conn.close()
            return
        conn.settimeout(None)
        renames: list[tuple[str, str]] = []
        ended = threading.Event()
        with self.lock:
            self.current, self.pending, self.abandoned = conn, None, False
        self.watcher = threading.Thread(target=self.watch, args=(conn, renames, ended), daemon=True)
        self.watcher.start()

        def hand_over(temporary: str, target: str) -> None:
            renames.append((temporary, target))
            body = json.dumps([temporary, target]).encode()
            try:
                conn.sendall(b"T" + client.HEADER.pack(len(body)) + body)
            except OSError:
                pass  # the client is gone: the watcher removes it

        try:
            code = execute(fds, request.header, self, hand_over)
        except BaseException:  # nothing a command does may end the worker
            _log("a command escaped its handlers")
            code = 70
        finally:
            with self.lock:
                self.current, self.running = None, False
        self.served += 1
        try:
            conn.sendall(b"X" + client.CODE.pack(code))
        except OSError:
            pass
        ended.set()  # the watcher closes the connection once the client is done with it

    def watch(self, conn: socket.socket, renames: list, ended: threading.Event) -> None:
        """The client's side of a command: its SIGINT/SIGTERM, raised in this process while
        the command runs (held until the command's handlers are in place; dropped once it has
        ended); its D once it has renamed the outputs; or its end. A client that goes away
        mid-command (killed) ends its command without a result (:meth:`abandon`). Whatever
        temporary file is left when the connection ends (a client that died) is removed, so
        the old files stay."""
        try:
            while True:
                try:
                    message = conn.recv(2)
                except OSError:
                    message = b""
                if len(message) == 2 and message[:1] == b"S" and message[1] in (signal.SIGINT, signal.SIGTERM):
                    self.deliver(conn, message[1])
                    continue
                if message[:1] == b"D":
                    break  # the client has renamed what it could
                if not ended.is_set():
                    self.abandon(conn)  # the end of the connection mid-command: the client is gone
                break
        finally:
            ended.wait()
            for temporary, _ in renames:
                client._unlink(temporary)
            conn.close()

    def abandon(self, conn: socket.socket) -> None:
        """The client died (``kill -9``) during its command: as in-process, nothing more
        reaches its streams, no output is written, and the command is ended as SIGTERM ends
        it. All under the lock, and only while the command's descriptors are in place
        (:meth:`begin` silences a command abandoned before that), so a late call can never
        touch the next command."""
        with self.lock:
            if self.current is not conn:
                return
            self.abandoned = True
            if self.running:
                _silence()
                os.kill(os.getpid(), signal.SIGTERM)
            else:
                self.pending = signal.SIGTERM

    def deliver(self, conn: socket.socket, signum: int) -> None:
        with self.lock:
            if self.current is not conn:
                return  # that command has ended (or another one runs now)
            if self.running:
                os.kill(os.getpid(), signum)
            else:
                self.pending = signum

    def begin(self) -> None:
        """The command's descriptors and handlers are in place: from now on a forwarded signal
        is raised (and a command whose client has gone is silenced first)."""
        with self.lock:
            self.running = True
            if self.abandoned:
                _silence()
            if self.pending is not None:
                os.kill(os.getpid(), self.pending)

    def end(self) -> None:
        """The command has ended: later signals are dropped (as a process that has written its
        result ignores them)."""
        with self.lock:
            self.running = False
            self.current = None


def _mappings_limit() -> int:
    """How many memory mappings the worker may hold before it retires after a command: half
    the kernel's limit (``vm.max_map_count``; ``$NLFIT_WORKER_MAX_MAPS`` overrides it). Every
    program XLA compiles or loads keeps mappings of its own code while it is cached (dropping
    the caches, ``jax.clear_caches`` and ``nlfit.programs.clear``, gives them back); a process
    at the limit can no longer compile ("LLVM compilation error: Cannot allocate memory") and
    crashes. Measured: 2,000 to 4,400 mappings for each new model fitted (``benchmarks/tape.py``),
    so the default limit of 65,530 is reached after about 20 models. The next command starts
    a fresh worker."""
    given = os.environ.get("NLFIT_WORKER_MAX_MAPS", "").strip()
    if given.isdigit():
        return int(given)
    try:
        with open("/proc/sys/vm/max_map_count", "rb") as limit:
            return int(limit.read()) // 2
    except (OSError, ValueError):
        return 65530 // 2


def _mappings() -> int:
    """The memory mappings this process holds (0 where ``/proc`` cannot tell)."""
    try:
        with open("/proc/self/maps", "rb") as maps:
            return sum(1 for _ in maps)
    except OSError:
        return 0


def _silence() -> None:
    """The running command's client has gone: descriptors 0-2 and the command's private copy
    of stdout lead to /dev/null, and outputs are discarded."""
    from nlfit.io import write

    write.discard_outputs()
    try:
        null = os.open(os.devnull, os.O_RDWR)
        targets = {0, 1, 2}
        try:
            targets.add(sys.stdout.fileno())
        except (AttributeError, OSError, ValueError):
            pass
        for fd in targets:
            os.dup2(null, fd)
        os.close(null)
    except OSError:
        pass


def _log(what: str) -> None:
    """With $NLFIT_WORKER_LOG set: what went wrong, with its traceback, appended there."""
    path = os.environ.get("NLFIT_WORKER_LOG")
    if path:
        import traceback

        with open(path, "a", encoding="utf-8") as log:
            log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} worker {os.getpid()}: {what}\n{traceback.format_exc()}\n")


def _receive_exactly(conn: socket.socket, size: int, deadline: float | None = None) -> bytes:
    data = b""
    while len(data) < size:
        if deadline is not None and time.monotonic() > deadline:
            raise OSError("too slow")
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise OSError("short header")
        data += chunk
    return data


def _receive_header(conn: socket.socket) -> dict:
    deadline = time.monotonic() + ACK_SECONDS  # the whole header, not each piece of it
    (length,) = client.HEADER.unpack(_receive_exactly(conn, client.HEADER.size, deadline))
    if length > MAX_HEADER:
        raise OSError("header too long")
    header = json.loads(_receive_exactly(conn, length, deadline).decode())
    if not isinstance(header, dict):
        raise OSError("the header is not an object")
    return header


def _receive_descriptors(conn: socket.socket) -> list[int]:
    """The client's confirmation, A, with its descriptors 0-2 (SCM_RIGHTS)."""
    import array

    numbers = array.array("i")
    data, ancillary, _, _ = conn.recvmsg(1, socket.CMSG_SPACE(8 * numbers.itemsize))
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            numbers.frombytes(payload[: len(payload) - len(payload) % numbers.itemsize])
    fds = list(numbers)
    if data != b"A" or len(fds) != 3:
        _close_all(fds)
        raise OSError("the client did not confirm")
    return fds


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def execute(fds: list[int], header: dict, gate, hand_over) -> int:
    """Run one command with the client's descriptors, directory, environment, umask,
    stream encodings and arguments, as ``nlfit.cli.main.execute`` runs it in-process; its
    exit code. ``gate`` (the Worker) is told when the command's signal handlers are in place
    and when it has ended, so that a forwarded signal reaches the command and only the
    command. Outputs are written to temporary files and not renamed: ``hand_over`` receives
    each (temporary, target) pair, which the client renames once the command has ended."""
    from nlfit import signals
    from nlfit.cli import main as entry
    from nlfit.io import write

    saved = [os.dup(fd) for fd in (0, 1, 2)]
    saved_streams = (sys.stdin, sys.stdout, sys.stderr, sys.argv)
    saved_env = dict(os.environ)
    saved_cwd = os.open(".", os.O_RDONLY)
    saved_mask = os.umask(0o022)
    code = 70
    try:
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        _close_all(fds)
        os.umask(int(header.get("umask", 0o022)) & 0o777)
        for key in [k for k in os.environ if k in client.FORWARDED or k.startswith(client.FORWARDED_PREFIX)]:
            del os.environ[key]
        os.environ.update(header.get("env", {}))
        try:
            os.chdir(header["cwd"])
        except OSError as exc:
            os.write(2, f"nlfit: error: cannot enter the working directory {header['cwd']}: {exc.strerror}\n".encode())
            return 2
        sys.argv = ["nlfit", *header.get("argv", [])]
        sys.stdin, sys.stdout, sys.stderr = _standard_streams(header.get("streams"))
        write.defer_renames(hand_over)
        signals.reset()
        signals.install()
        try:
            gate.begin()
            code = entry.execute(prog_name=header.get("prog") or "nlfit")
        except (signals.Interrupted, KeyboardInterrupt) as stop:  # forwarded before the command began
            stop = stop if isinstance(stop, signals.Interrupted) else signals.Interrupted(signal.SIGINT)
            client.say(f"nlfit: {stop}\n")
            code = stop.exit_code
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        except BaseException:  # --debug's traceback, as Python would print it
            import traceback

            traceback.print_exc()
            code = 1
        finally:
            gate.end()
        _settle_signals()
        _idle_signals()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError, AttributeError):
                pass
    finally:
        write.defer_renames(None)
        for stream in (sys.stdin, sys.stdout, sys.stderr):
            if stream is not None and stream not in saved_streams:
                try:
                    stream.close()
                except (OSError, ValueError):
                    pass
        sys.stdin, sys.stdout, sys.stderr, sys.argv = saved_streams
        for target, fd in enumerate(saved):
            os.dup2(fd, target)
            os.close(fd)
        os.fchdir(saved_cwd)
        os.close(saved_cwd)
        os.umask(saved_mask)
        os.environ.clear()
        os.environ.update(saved_env)
        _idle_signals()
    return code


def _standard_streams(chosen=None):
    """Fresh sys.stdin/stdout/stderr on descriptors 0-2 with the encodings and error handlers
    Python chose in the client (``chosen``: [encoding, errors] for each; UTF-8 where missing)."""
    defaults = (["utf-8", "strict"], ["utf-8", "strict"], ["utf-8", "backslashreplace"])
    chosen = [c if isinstance(c, list) and len(c) == 2 and _known_encoding(c[0]) else d for c, d in zip(chosen or defaults, defaults, strict=False)]
    (in_encoding, in_errors), (out_encoding, out_errors), (err_encoding, err_errors) = chosen
    stdin = io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "r", closefd=False)), encoding=in_encoding, errors=in_errors)
    tty = os.isatty(1)
    stdout = io.TextIOWrapper(io.BufferedWriter(io.FileIO(1, "w", closefd=False)), encoding=out_encoding, errors=out_errors, line_buffering=tty)
    stderr = io.TextIOWrapper(io.BufferedWriter(io.FileIO(2, "w", closefd=False)), encoding=err_encoding, errors=err_errors, line_buffering=True)
    return stdin, stdout, stderr


def _known_encoding(name) -> bool:
    import codecs

    try:
        return isinstance(name, str) and codecs.lookup(name) is not None
    except LookupError:
        return False


def _settle_signals() -> None:
    """A signal forwarded just before the command ended: let its handler run now, while the
    command's handlers are still in place, rather than in the idle worker."""
    from nlfit import signals

    try:
        for _ in range(3):
            time.sleep(0)
    except (signals.Interrupted, KeyboardInterrupt):
        pass


def _idle_signals() -> None:
    """Between commands: SIGTERM stops the worker; SIGINT (no terminal reaches it) is ignored."""

    def terminate(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _start_helpers() -> None:
    """Python's multiprocessing resource tracker, started now with the worker's own
    descriptors (/dev/null): started during a command (by a Dask cluster's processes) it would
    keep that client's stderr open for the worker's whole life, and a pipe reading it would
    never end."""
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()


def _warm() -> None:
    """Import what commands use, so the first command served does not pay for it."""
    import pandas  # noqa: F401
    import scipy.linalg  # noqa: F401
    import scipy.stats  # noqa: F401

    import nlfit.batch  # noqa: F401
    import nlfit.cli.app
    import nlfit.fitting  # noqa: F401
    import nlfit.io.read  # noqa: F401
    import nlfit.io.rows  # noqa: F401
    import nlfit.postprocess  # noqa: F401
    import nlfit.report.console  # noqa: F401
    import nlfit.report.formats  # noqa: F401
    import nlfit.result  # noqa: F401
    from nlfit import derivatives  # noqa: F401
    from nlfit.solvers import directions, globalization, loop  # noqa: F401

    nlfit.cli.app.command()  # the click command, built once for every command served


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nlfit.worker", description="nlfit's resident worker (started by nlfit itself).")
    parser.add_argument("--folder", default=None, help="the worker's folder (default: as the client finds it)")
    parser.add_argument("--idle", type=float, default=None, help=f"exit after this many idle seconds (default $NLFIT_WORKER_IDLE or {DEFAULT_IDLE:g})")
    args = parser.parse_args(argv)
    if args.folder:
        os.environ["NLFIT_WORKER_DIR"] = args.folder
    directory = client.folder(create=True)
    lock = None if directory is None else os.path.join(directory, "starting")
    try:
        if directory is None:
            sys.stderr.write("nlfit: error: the worker's folder is missing or not private to this user (mode 0700)\n")
            return 2
        idle = args.idle if args.idle is not None else float(os.environ.get("NLFIT_WORKER_IDLE") or DEFAULT_IDLE)
        identity = client.identity()  # before JAX's import, which sets variables of its own
        context = client.context()
        os.chdir("/")  # hold no folder of the command that started it
        _idle_signals()
        _start_helpers()
        _warm()
        worker = Worker(directory, idle, identity, context)
        if len(os.fsencode(worker.path)) > client.MAX_SOCKET_PATH:
            sys.stderr.write(f"nlfit: error: the socket path {worker.path} is longer than {client.MAX_SOCKET_PATH} bytes\n")
            return 2
        sock = worker.listen()
        if sock is None:
            return 0  # another worker of this installation is already listening
    finally:
        if lock is not None:
            client._unlink(lock)
    try:
        worker.replace_others()
        threading.Thread(target=worker.accept_loop, args=(sock,), daemon=True).start()
        worker.serve()
    finally:
        worker.stopping.set()
        try:
            if os.stat(worker.path).st_ino == worker.inode:  # still ours, not a successor's
                os.unlink(worker.path)
        except OSError:
            pass
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
