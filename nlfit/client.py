"""The client of the resident worker (``nlfit.worker``): standard library only.

The console entry point calls :func:`run` before it imports typer, rich, numpy or JAX. If a
worker of this exact installation is listening, the command runs there: the client passes
its standard descriptors (SCM_RIGHTS), so the worker writes to this process's stdout and
stderr directly and reads its stdin only when the command reads ``-``; it sends the argument
vector, the working directory and the environment that changes output; it forwards SIGINT
and SIGTERM; and it exits with the worker's exit code. Whenever that is not possible (no
worker, another installation's, a busy one, an unsafe folder) :func:`run` returns None and
the command runs in this process, as it always did.

Where the socket lives: ``$NLFIT_WORKER_DIR``, else ``$XDG_RUNTIME_DIR/nlfit``, else
``/tmp/nlfit-UID``: a folder of mode 0700 owned by the user (any other owner or mode and the
worker is not used), holding ``worker-VERSION-HASH.sock`` (mode 0600). HASH covers the
installed package files (names, sizes, modification times), so an editable install that
changes gets a new worker.
"""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import socket
import stat
import struct
import sys

OFF_VALUES = ("off", "0", "no", "false")
# What changes a command's output besides its arguments: passed to the worker, which sets
# exactly these for the request (and unsets the ones the client does not have).
FORWARDED = ("NO_COLOR", "FORCE_COLOR", "TERM", "COLUMNS", "LINES", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "HOME", "XDG_CACHE_HOME",
             "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLORTERM", "CLICOLOR", "CLICOLOR_FORCE", "JUPYTER_COLUMNS", "JUPYTER_LINES")  # fmt: skip
FORWARDED_PREFIX = "NLFIT_"
WAIT_SECONDS = 1.0  # a busy worker: how long a command waits for its turn before it runs in-process
START_WAIT_SECONDS = 10.0  # a worker that is starting: how long a command waits for it
HEADER = struct.Struct(">I")
CODE = struct.Struct(">i")
IN_PROCESS = ("worker", "--install-completion", "--show-completion")  # never sent to a worker
_OTHER_DESCRIPTORS = re.compile(r"/dev/fd/|/proc/(self|thread-self|\d+)/fd/")


def enabled(argv: list[str]) -> bool:
    """Whether this command may use a worker: not with NLFIT_WORKER=off (or --no-worker,
    which the entry point turns into that), not for ``nlfit worker ...`` itself."""
    if os.environ.get("NLFIT_WORKER", "").strip().lower() in OFF_VALUES:
        return False
    if any(key.startswith("_") and key.endswith("_COMPLETE") for key in os.environ):
        return False  # shell completion (click's _NLFIT_COMPLETE): answered in-process
    if any(_names_a_descriptor(arg) for arg in argv):
        return False  # /dev/fd/N, <(cmd), >(cmd): descriptors of this process the worker does not have
    if _limited():
        return False  # a CPU or memory limit would count the worker's whole life, not this command
    if "--engine=dask" in argv or any(a == "--engine" and b == "dask" for a, b in zip(argv, argv[1:], strict=False)):
        return False  # a Dask cluster's processes would outlive the command holding the client's stderr
    return not any(arg in IN_PROCESS for arg in argv[:1] + [a for a in argv if a.startswith("--")])


_STANDARD = re.compile(r"/dev/std(in|out|err)|/dev/fd/[012]|/proc/(self|thread-self)/fd/[012]")


def _names_a_descriptor(arg: str) -> bool:
    """Whether an argument (or the value of ``--flag=value``) names one of this process's
    descriptors other than 0-2, however it is written: ``/dev/./fd/3``, ``fd/4`` from /dev, a
    link to /dev/fd/3. The worker has descriptors of its own under those numbers."""
    for text in {arg, arg.split("=", 1)[-1]}:
        try:
            path = os.path.normpath(os.path.join(os.getcwd(), text))
            if _STANDARD.fullmatch(path):
                continue  # 0-2 are passed to the worker
            parent = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))  # a link to /dev/fd
            if any(_OTHER_DESCRIPTORS.search(p) for p in (path, parent, os.path.realpath(path))):
                return True
        except (OSError, ValueError):
            continue
    return False


def _limited() -> bool:
    """A finite CPU-time, address-space or data-size limit: in a worker it would count every
    command since the worker started (and its caches), not this command alone."""
    import resource

    for name in ("RLIMIT_CPU", "RLIMIT_AS", "RLIMIT_DATA"):
        soft, _ = resource.getrlimit(getattr(resource, name))
        if soft != resource.RLIM_INFINITY:
            return True
    return False


# Environment that changes how JAX computes, or where it keeps compiled programs: a worker
# started with other values is another worker (of the same installation).
SETTINGS_PREFIXES = ("JAX_", "XLA_", "CUDA_", "NVIDIA_")
# ... and what libraries read once, when they are imported (typer's help layout).
SETTINGS_NAMES = (
    "NLFIT_CACHE_DIR",
    "NLFIT_NO_CACHE",
    "NLFIT_XLA_EMITTERS",
    "NLFIT_THREADS",
    "XDG_CACHE_HOME",
    "HOME",
    "TERMINAL_WIDTH",
    "GITHUB_ACTIONS",
    "PY_COLORS",
    "FORCE_TERMINAL",
)

# What the kernel decides a process may open and how far it may go, read from /proc: the
# user and group ids, the capabilities, no_new_privs and seccomp, the namespaces (a mount
# namespace is another view of every path), the root folder, the resource limits, the cgroup
# (its memory limit) and the security module's label. A worker runs a command only for a
# client whose context equals its own, so it never opens, writes or allocates more than the
# client itself could.
_STATUS_FIELDS = ("Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp", "Seccomp_filters")
_NAMESPACES = ("mnt", "user", "pid", "net", "ipc", "uts", "cgroup")


def context(pid: int | str = "self") -> str | None:
    """A digest of process ``pid``'s rights and limits (see above); None when /proc cannot
    tell (another system, a process that has gone, one we may not inspect). This process's
    own is read once (the identity and the check of the worker both need it)."""
    if pid == "self":
        return _own_context()
    return _context(pid)


@functools.cache
def _own_context() -> str | None:
    return _context("self")


def _context(pid: int | str) -> str | None:
    import hashlib

    base = f"/proc/{pid}"
    digest = hashlib.sha256()
    try:
        with open(f"{base}/status", encoding="utf-8", errors="replace") as handle:
            fields = dict(line.split(":", 1) for line in handle if ":" in line)
        for name in _STATUS_FIELDS:
            digest.update(f"{name}:{' '.join(fields.get(name, '').split())}\n".encode())
        for name in _NAMESPACES:
            digest.update(f"{os.readlink(f'{base}/ns/{name}')}\n".encode())
        root = os.stat(f"{base}/root")
        digest.update(f"root {root.st_dev} {root.st_ino}\n".encode())
        for name in ("limits", "cgroup"):
            with open(f"{base}/{name}", "rb") as handle:
                digest.update(handle.read())
    except (OSError, ValueError):
        return None
    try:
        with open(f"{base}/attr/current", "rb") as handle:
            digest.update(handle.read())
    except OSError:
        pass  # no security module label on this system
    return digest.hexdigest()[:16]


def identity() -> str:
    """VERSION-INSTALLATION-SETTINGS, three parts of a worker's name. INSTALLATION hashes the
    package's files (names, sizes, modification times), the interpreter's environment
    (``sys.prefix``, the Python version) and the modification time of its site-packages
    folder (a library installed or upgraded there changes it); SETTINGS hashes the
    environment that changes how JAX computes or caches (JAX_*, XLA_*, the cache folders,
    NLFIT_THREADS) and the number of usable cores.
    The SETTINGS part also covers the process's rights and limits (:func:`context`) and
    Python's file-system encoding. A worker stops the workers of other installations, never
    those of other settings."""
    import hashlib
    import sysconfig

    from nlfit import __version__

    root = os.path.dirname(os.path.abspath(__file__))
    digest = hashlib.sha256(os.environ.get("NLFIT_WORKER_SALT", "").encode())  # tests: stands in for an edited file
    library = sysconfig.get_paths()["purelib"]
    try:
        installed = os.stat(library).st_mtime_ns
    except OSError:
        installed = 0
    digest.update(f"{sys.prefix}\0{sys.version}\0{library}\0{installed}\n".encode())
    stack = [root]
    while stack:
        folder = stack.pop()
        with os.scandir(folder) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                if entry.is_dir(follow_symlinks=False) and entry.name != "__pycache__":
                    stack.append(entry.path)
                elif entry.name.endswith(".py"):
                    info = entry.stat(follow_symlinks=False)
                    digest.update(f"{os.path.relpath(entry.path, root)}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    settings = hashlib.sha256()
    for key in sorted(k for k in os.environ if k.startswith(SETTINGS_PREFIXES) or k in SETTINGS_NAMES):
        settings.update(f"{key}={os.environ[key]}\n".encode())
    # The process's rights and limits, and the encodings Python fixed at start-up: a
    # client with other ones finds another worker (or none, and runs in-process).
    import locale

    settings.update(f"{context()}\0{sys.getfilesystemencoding()}\0{sys.flags.utf8_mode}\0{locale.getpreferredencoding(False)}\n".encode())
    # The cores it may use (taskset): a worker makes one XLA device per core when it starts
    # (nlfit.cores); --threads N then limits each command to N of them.
    from nlfit import cores

    settings.update(f"cores {cores.usable()}\n".encode())
    return f"{__version__}-{digest.hexdigest()[:16]}-{settings.hexdigest()[:8]}"


def installation(name: str) -> str:
    """The VERSION-INSTALLATION part of an identity."""
    return name.rsplit("-", 1)[0]


def folder(create: bool = False) -> str | None:
    """The worker's folder, or None when it is missing (``create`` False) or not safe: it
    must be a real folder (not a link), owned by this user, with no access for others, and
    ``$NLFIT_WORKER_DIR`` must be an absolute path."""
    explicit = os.environ.get("NLFIT_WORKER_DIR")
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if explicit:
        if not os.path.isabs(explicit):
            return None  # relative to whichever folder a command runs in: no one place for a worker
        path = explicit
    elif runtime and os.path.isabs(runtime) and os.path.isdir(runtime):
        path = os.path.join(runtime, "nlfit")
    else:
        path = f"/tmp/nlfit-{os.getuid()}"
    if create:
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        except OSError:
            return None
    return path if safe(path) else None


def safe(path: str) -> bool:
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and info.st_mode & 0o077 == 0


def socket_path(directory: str, name: str | None = None) -> str:
    return os.path.join(directory, f"worker-{name or identity()}.sock")


def peer_uid(sock: socket.socket) -> int:
    """The user id of the process at the other end of a Unix socket (SO_PEERCRED)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


SO_PEERPIDFD = getattr(socket, "SO_PEERPIDFD", 77)  # Linux 6.5
MAX_SOCKET_PATH = 107  # bytes: a Unix socket's address (sun_path) holds 108 with its NUL


def peer_context(sock: socket.socket, accepted: float | None = None) -> str | None:
    """:func:`context` of the process at the other end of ``sock``, read so that a process
    that has gone and whose pid was reused cannot pass for it: through the peer's pidfd
    (SO_PEERPIDFD), the process must still be the same after /proc was read. On kernels
    without SO_PEERPIDFD (before 6.5) the peer's pid (SO_PEERCRED) must belong to a process
    that started before ``accepted`` (CLOCK_BOOTTIME, when the connection was accepted) and
    still lives after the read. None when it cannot be told."""
    try:
        pidfd = sock.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD)
    except OSError:
        pidfd = None
    if pidfd is not None:
        try:
            with open(f"/proc/self/fdinfo/{pidfd}", encoding="ascii") as handle:
                pid = int(next(line.split()[1] for line in handle if line.startswith("Pid:")))
            found = context(pid) if pid > 0 else None
            return found if found is not None and _pidfd_alive(pidfd) else None
        except (OSError, ValueError, StopIteration):
            return None
        finally:
            os.close(pidfd)
    pid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))[0]
    began = _start_ticks(pid)
    if pid <= 0 or began is None:
        return None
    limit = (accepted if accepted is not None else _boot_seconds()) * os.sysconf("SC_CLK_TCK")
    found = context(pid)
    return found if began <= limit and _start_ticks(pid) == began else None


def _pidfd_alive(pidfd: int) -> bool:
    """A pidfd becomes readable when its process ends."""
    import select

    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return not poller.poll(0)


def _start_ticks(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (/proc/PID/stat, field 22)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return int(handle.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _boot_seconds() -> float:
    import time

    return time.clock_gettime(time.CLOCK_BOOTTIME)


def connect(path: str, timeout: float | None = 5.0) -> socket.socket | None:
    """A connection to the worker at ``path`` whose process is this user's, or None."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        if peer_uid(sock) != os.getuid():
            raise OSError("the worker belongs to another user")
    except OSError:
        sock.close()
        return None
    return sock


def send_header(sock: socket.socket, header: dict, fds: list[int] | None = None) -> None:
    body = json.dumps(header).encode()
    data = HEADER.pack(len(body)) + body
    if fds:
        import array

        sent = sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
        data = data[sent:]
    sock.sendall(data)


def control(path: str, command: str, timeout: float = 10.0) -> dict | None:
    """Ask the worker at ``path`` for ``status``, to ``stop``, or to ``wait`` until it runs no
    command; its answer (the status), or None."""
    sock = connect(path, timeout)
    if sock is None:
        return None
    try:
        send_header(sock, {"identity": path_identity(path), "control": command})
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
        return json.loads(reply.decode()) if reply else None
    except (OSError, ValueError):
        return None
    finally:
        sock.close()


def path_identity(path: str) -> str:
    """The identity in a socket's name."""
    name = os.path.basename(path)
    return name[len("worker-") : -len(".sock")]


class _Signals:
    """SIGINT and SIGTERM while the client waits: forwarded once the worker runs the
    command; before that, remembered (the command is then not started)."""

    def __init__(self):
        self.sock = None
        self.received = None
        self.previous = {}

    def install(self):
        for signum in (signal.SIGINT, signal.SIGTERM):
            self.previous[signum] = signal.signal(signum, self.handle)

    def restore(self):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def handle(self, signum, frame):
        self.received = signum
        if self.sock is not None:
            try:
                self.sock.send(b"S" + bytes([signum]))
            except OSError:
                pass


def run(argv: list[str]) -> int | None:
    """Run the command ``argv`` in the worker: its exit code, or None to run in-process."""
    explicit = os.environ.get("NLFIT_WORKER_DIR")
    if explicit and not os.path.isabs(explicit):
        say(f"nlfit: warning: NLFIT_WORKER_DIR={explicit!r} is not an absolute path; running without the worker\n")
        return None
    directory = folder()
    if directory is None:
        return None
    path = socket_path(directory)
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        say(f"nlfit: warning: the worker's socket path {path!r} is longer than {MAX_SOCKET_PATH} bytes; running without the worker\n")
        return None
    if not os.path.exists(path):
        if not _wait_for_start(directory, path):
            return None
    try:
        cwd = os.getcwd()
        for fd in (0, 1, 2):
            os.fstat(fd)  # a closed standard descriptor: in-process handles it
    except OSError:
        return None
    sock = connect(path)
    if sock is None:
        return None
    if peer_context(sock) != context():
        sock.close()  # not a worker with this process's rights (another one bound the name): none of ours
        return None
    signals = _Signals()
    signals.install()
    try:
        env = {k: v for k, v in os.environ.items() if k in FORWARDED or k.startswith(FORWARDED_PREFIX)}
        mask = os.umask(0)
        os.umask(mask)
        header = {"identity": path_identity(path), "prog": program_name(), "argv": argv, "cwd": cwd, "env": env, "umask": mask, "streams": _streams()}
        try:
            send_header(sock, header)
            sock.settimeout(WAIT_SECONDS)
            answer = sock.recv(1)  # G: your turn; R: refused (another installation)
        except OSError:
            return None  # busy for longer than WAIT_SECONDS, or gone
        if answer != b"G" or signals.received is not None:
            return _not_started(signals)
        sock.settimeout(None)
        import array

        # The descriptors go only now: a command waiting in the queue holds none of them (a
        # pipe's other end would otherwise never see its end of file).
        sock.sendmsg([b"A"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [0, 1, 2]))])
        signals.sock = sock
        if signals.received is not None:  # arrived between the answer and now
            signals.handle(signals.received, None)
        renames: list[tuple[str, str]] = []
        try:
            while (tag := _receive(sock, 1)) == b"T":  # an output written to its temporary file
                pair = json.loads(_receive(sock, HEADER.unpack(_receive(sock, HEADER.size))[0]).decode())
                if _own_temporary(pair):
                    renames.append((pair[0], pair[1]))
            if tag != b"X":
                raise ValueError("not the end of the command")
            code = CODE.unpack(_receive(sock, CODE.size))[0]
        except (OSError, ValueError, TypeError):
            for temporary, _ in renames:  # the worker died mid-command: the old files stay
                _unlink(temporary)
            say("nlfit: error: the worker ended during the command; run it again, or with NLFIT_WORKER=off\n")
            return 70
        if signals.received is not None:  # interrupted before its outputs were in place: as in-process, none are
            for temporary, _ in renames:
                _unlink(temporary)
            renames = []
            from nlfit.signals import EXIT_CODES, MESSAGES

            say(f"nlfit: {MESSAGES[signals.received]}\n")
            code = EXIT_CODES[signals.received]
        code = _finish_outputs(renames, code)
        try:
            sock.sendall(b"D")  # done: the worker removes whatever temporary file is left
        except OSError:
            pass
        return code
    finally:
        signals.sock = None
        sock.close()
        signals.restore()


def _receive(sock: socket.socket, size: int) -> bytes:
    """Exactly ``size`` bytes from the worker; OSError when it ends first."""
    data = b""
    while len(data) < size:
        try:
            chunk = sock.recv(size - len(data))
        except InterruptedError:
            continue
        if not chunk:
            raise OSError("the worker closed the connection")
        data += chunk
    return data


_TEMPORARY = re.compile(r"\.nlfit-[A-Za-z0-9_]{8}\.tmp")


def _own_temporary(pair) -> bool:
    """Whether the worker's (temporary, target) pair is one this client may rename: a file
    named as ``write_atomic`` names its temporary files, in the target's folder, a regular
    file of this user with one link. A path the worker names is never taken on its word."""
    if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) and os.path.isabs(p) for p in pair)):
        return False
    temporary, target = pair
    if not _TEMPORARY.fullmatch(os.path.basename(temporary)) or os.path.dirname(temporary) != os.path.dirname(target):
        return False
    try:
        info = os.lstat(temporary)
    except OSError:
        return False
    return stat.S_ISREG(info.st_mode) and info.st_uid == os.getuid() and info.st_nlink == 1


def _finish_outputs(renames: list, code: int) -> int:
    """The command has finished: rename each output's temporary file over its target, here,
    with this process's rights (the worker wrote them but renames nothing, so a client that
    dies before this point leaves every output as it was). The exit code, or 2 when a rename
    fails (the temporary file is then removed and the old file stays)."""
    for temporary, target in renames:
        if not _own_temporary([temporary, target]):  # checked again: it may have been replaced since
            continue
        try:
            os.replace(temporary, target)
        except OSError as exc:
            _unlink(temporary)
            say(f"nlfit: error: cannot write {target!r}: {exc.strerror}\n")
            code = code or 2
    return code


def _streams() -> list[list[str] | None]:
    """The encoding and error handler of this process's stdin, stdout and stderr, as Python
    chose them here (PYTHONIOENCODING, the locale): the worker's streams for the command use
    the same, so the bytes written are the ones an in-process run writes."""
    return [[stream.encoding, stream.errors] if stream is not None and hasattr(stream, "encoding") else None for stream in (sys.stdin, sys.stdout, sys.stderr)]


def program_name() -> str:
    """How this process was started, as click names it in usage lines: ``nlfit`` for the
    console script, ``python -m nlfit`` for the module."""
    main = sys.modules.get("__main__")
    path = sys.argv[0] if sys.argv else "nlfit"
    package = getattr(main, "__package__", None)
    if package in (None, ""):
        return os.path.basename(path)
    name = os.path.splitext(os.path.basename(path))[0]
    module = package if name == "__main__" else f"{package}.{name}"
    return f"python -m {module.lstrip('.')}"


def _not_started(signals: _Signals) -> int | None:
    if signals.received is None:
        return None
    from nlfit.signals import EXIT_CODES, MESSAGES

    say(f"nlfit: {MESSAGES[signals.received]}\n")
    return EXIT_CODES[signals.received]


def _wait_for_start(directory: str, path: str) -> bool:
    """A worker is starting (its lock is fresh): wait for its socket rather than run
    in-process, which would take longer. False when none is starting."""
    import time

    lock = os.path.join(directory, "starting")
    try:
        began = os.stat(lock).st_mtime
        with open(lock, encoding="ascii") as handle:
            starter = int(handle.read().strip() or 0)
    except (OSError, ValueError):
        return False
    if time.time() - began > START_WAIT_SECONDS or not _alive(starter):
        return False  # too old, or the starting worker died: nothing to wait for
    deadline = began + START_WAIT_SECONDS
    while time.time() < deadline:
        if os.path.exists(path):
            return True
        if not os.path.exists(lock) or not _alive(starter):
            return os.path.exists(path)
        time.sleep(0.02)
    return False


def start_in_background(announce: bool = True) -> None:
    """Start a worker for this installation unless one runs or is starting; the first time
    ever (in this folder), say so in one line on stderr."""
    directory = folder(create=True)
    if directory is None:
        return
    path = socket_path(directory)
    lock = os.path.join(directory, "starting")
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        return  # no client could reach its socket
    if os.path.exists(path) and not _stale(path):
        return
    try:
        descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        import time

        try:
            with open(lock, encoding="ascii") as handle:
                starter = int(handle.read().strip() or 0)
        except (OSError, ValueError):
            starter = 0
        try:
            fresh = time.time() - os.stat(lock).st_mtime < START_WAIT_SECONDS
            if fresh and (starter == 0 or _alive(starter)):
                return  # another command is starting one
            os.unlink(lock)  # left by a worker that never started
            descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except OSError:
            return
    except OSError:
        return
    try:
        pid = spawn(directory)
        os.write(descriptor, str(pid).encode())  # a command that finds the lock checks that this pid lives
    except OSError:
        os.close(descriptor)
        _unlink(lock)
        return
    os.close(descriptor)
    marker = os.path.join(directory, "announced")
    if announce and not os.path.exists(marker):
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_WRONLY, 0o600))
        except OSError:
            return
        say(
            "nlfit: started a background worker that makes the next commands fast; it exits after 10 idle minutes"
            " ('nlfit worker stop' stops it, NLFIT_WORKER=off or --no-worker runs without it)\n"
        )


def say(text: str) -> None:
    """A line on stderr, if there is a stderr to write to (``2>&-`` leaves none)."""
    try:
        sys.stderr.write(text)
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        pass


def spawn(directory: str, idle: float | None = None) -> int:
    """Start the worker (``nlfit.worker.main``) detached: a new session, stdio on /dev/null;
    its pid. It imports this very nlfit: ``-P`` keeps the working directory off its path (a
    source checkout there would otherwise shadow the installed package) and the folder this
    package was imported from goes first."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    boot = f"import sys; sys.path.insert(0, {root!r}); from nlfit.worker import main; sys.exit(main(sys.argv[1:]))"
    argv = [sys.executable, "-P", "-c", boot, "--folder", directory]
    if idle is not None:
        argv += ["--idle", str(idle)]
    devnull = os.devnull
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, devnull, os.O_WRONLY, 0),
        (os.POSIX_SPAWN_OPEN, 2, devnull, os.O_WRONLY, 0),
    ]
    env = {k: v for k, v in os.environ.items() if k != "NLFIT_ANNOUNCE_START"}
    return os.posix_spawn(sys.executable, argv, env, file_actions=actions, setsid=True)


def _stale(path: str) -> bool:
    """A socket file nobody listens on (its worker was killed: SIGKILL, the OOM killer): a
    connection is refused. A new worker replaces it (it renames its own socket over it)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(1.0)
    try:
        sock.connect(path)
    except ConnectionRefusedError:
        return True
    except OSError:
        return False  # busy (a full queue), or not ours to judge
    finally:
        sock.close()
    return False


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (and is not a zombie); False for 0."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
