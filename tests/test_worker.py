"""The resident worker: a command it serves writes the same bytes and exits with the same code
as in-process; concurrent clients get their own results; a stale worker is replaced; a
folder or a peer that is not the user's is refused; Ctrl-C through the client interrupts the
fit. Every test here starts its own worker in a private folder and stops it afterwards (the
rest of the suite runs with NLFIT_WORKER=off)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from conftest import NIST_DIR, started

from nlfit import client
from nlfit._jax import cache_dir

NLFIT = [sys.executable, "-m", "nlfit"]


def _env(folder: str, **more) -> dict:
    """The worker on, in ``folder``."""
    return {**os.environ, "NLFIT_WORKER": "on", "NLFIT_WORKER_DIR": folder, "NO_COLOR": "1", "COLUMNS": "120", **more}


def _run(args, env, cwd=None, stdin=None):
    done = subprocess.run([*NLFIT, *map(str, args)], env=env, cwd=cwd, stdin=stdin, capture_output=True, timeout=300)
    return done.returncode, done.stdout, done.stderr


def _served(env) -> int:
    status = client.control(client.socket_path(env["NLFIT_WORKER_DIR"], _identity(env)), "status")
    return -1 if status is None else status["served"]


def _identity(env) -> str:
    """The identity a command run with ``env`` computes."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        return client.identity()
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextlib.contextmanager
def _started_worker(cache: Path, more_env: dict | None = None, **limits):
    """A worker in a private folder (short path: a Unix socket's name has at most 107 bytes),
    stopped on the way out. ``limits``: resource limits (resource.RLIMIT_* name: value) of
    the command that starts it, which the worker inherits."""
    folder = tempfile.mkdtemp(prefix="nw", dir="/tmp")
    env = _env(folder, NLFIT_CACHE_DIR=str(cache), **(more_env or {}))

    # The limits are set by a small wrapper that then runs the command (a preexec_fn would fork
    # this process, which has JAX's threads).
    wrapper = [sys.executable, "-c", "import os, resource, sys\n"
               "for name, value in zip(sys.argv[1::2], sys.argv[2::2]):\n"
               "    if name.startswith('RLIMIT'): resource.setrlimit(getattr(resource, name), (int(value), int(value)))\n"
               "os.execv(sys.executable, [sys.executable, '-m', 'nlfit', 'worker', 'start'])\n"]  # fmt: skip
    for name, value in limits.items():
        wrapper += [name, str(value)]
    try:
        done = subprocess.run(wrapper, env=env, capture_output=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert b"listening on" in done.stdout
        yield env
    finally:
        subprocess.run([*NLFIT, "worker", "stop"], env=env, capture_output=True, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    """One worker shared by the tests of this module that leave it as they found it, on the
    suite's compilation cache (what other tests compiled is not compiled again)."""
    with _started_worker(cache_dir() or tmp_path_factory.mktemp("cache")) as env:
        yield env


@pytest.fixture
def own_worker(tmp_path):
    """A worker of the test's own, for a test that replaces or kills it (on the suite's
    compilation cache, as the shared worker)."""
    with _started_worker(cache_dir() or tmp_path / "cache") as env:
        yield env


def _data(folder: Path) -> None:
    x = np.linspace(-1.0, 1.0, 60)
    y = 1.0 / (1.0 + 10.0 * x * x) + 0.05 * np.sin(17 * x)
    (folder / "runge.csv").write_text("x,y\n" + "".join(f"{a!r},{b!r}\n" for a, b in zip(x.tolist(), y.tolist(), strict=True)))
    (folder / "bad.csv").write_text("x,y\n1,2\n3,abc\n")


# What differs between two runs of one command: the seconds it took (JSON, the report's
# "time 0.05 s", the comparison table's time column).
TIMING = re.compile(rb'("seconds": )[0-9.e+-]+|[0-9.]+ ?(ms|s)\b|[0-9.,]+k? fits/s|(\xe2\x94\x82 +)\d+\.\d{3}(?= \xe2\x94\x82)')

COMMANDS = [
    ["fit", "runge.csv", "-m", "rational"],
    ["fit", "runge.csv", "-m", "rational", "-f", "table"],
    ["fit", "runge.csv", "-m", "rational", "-f", "csv", "-q"],
    ["fit", "runge.csv", "-m", "rational", "--method", "lm,gn", "-f", "csv"],
    ["fit", "runge.csv", "-m", "a/(1+b*x^2)", "--p0", "a=1,b=5", "-o", "result.json"],
    ["predict", "result.json", "--at", "0,0.5"],
    ["check-jac", "runge.csv", "-m", "rational"],
    ["check-jac", NIST_DIR / "Misra1a.dat", "-f", "json"],
    ["generate", "runge", "--seed", "3", "--n", "7"],
    ["models"],
    ["methods"],
    ["--help"],
    ["fit", "--help"],
    [],
    # the error cases of tests/test_cli.py
    ["fit", "nope.csv", "-m", "rational"],
    ["fit", "bad.csv", "-m", "polynomial:1"],
    ["fit", "runge.csv", "-m", "rational", "--y", "zz"],
    ["fit", "runge.csv", "-m", "splines"],
    ["fit", "runge.csv", "-m", "rational", "--p0", "1,2"],
    ["fit", "runge.csv", "-m", "rational", "--max-iter", "0"],
    ["fit", "runge.csv", "-m", "rational", "--format", "xml"],
    ["fit", "runge.csv"],
    ["generate", "nothing"],
    ["frobnicate"],
]


def test_a_served_command_writes_the_same_bytes_and_exit_code(worker, tmp_path):
    _data(tmp_path)
    before = _served(worker)
    off = {**worker, "NLFIT_WORKER": "off"}
    for args in COMMANDS:
        outputs = []
        writes = args[-1:] == ["result.json"]
        for env in (off, worker):
            if writes:
                (tmp_path / "result.json").unlink(missing_ok=True)
            code, out, err = _run(args, env, cwd=tmp_path)
            saved = (tmp_path / "result.json").read_bytes() if writes else b""
            outputs.append((code, TIMING.sub(rb"\1\3T", out), TIMING.sub(rb"\1\3T", err), TIMING.sub(rb"\1\3T", saved)))
        assert outputs[0] == outputs[1], args
    assert _served(worker) - before == len(COMMANDS)  # every one of them was the worker's
    with open(tmp_path / "runge.csv", "rb") as stdin:  # '-' reads the client's stdin
        piped = _run(["fit", "-", "-m", "rational", "-f", "csv", "-q"], worker, cwd=tmp_path, stdin=stdin)
    assert piped == _run(["fit", "runge.csv", "-m", "rational", "-f", "csv", "-q"], off, cwd=tmp_path)


def test_sixteen_concurrent_clients_get_their_own_results(worker, tmp_path):
    files = []
    for i in range(16):
        x = np.linspace(0.0, 3.0, 40 + i)
        path = tmp_path / f"d{i}.csv"
        y = (i + 1) * np.exp(-0.5 * x) + 0.01 * np.cos(9 * x)
        path.write_text("x,y\n" + "".join(f"{a!r},{b!r}\n" for a, b in zip(x.tolist(), y.tolist(), strict=True)))
        files.append(path)
    args = ["-m", "a*exp(-b*x)", "-f", "json", "-q", "--starts", "1"]
    assert _run(["fit", files[0], *args], worker)[0] == 0  # compiled once: the others queue behind short fits
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda path: _run(["fit", path, *args], worker), files))
    for i, (code, out, err) in enumerate(results):
        assert code == 0, err
        payload = json.loads(out)  # one whole document: nothing interleaved
        assert payload["data"]["files"] == [str(files[i])]
        assert payload["params"]["a"]["value"] == pytest.approx(i + 1, rel=0.02)
        assert err == b""


def test_a_stale_worker_is_replaced(own_worker, tmp_path):
    worker = own_worker
    _data(tmp_path)
    old = client.control(client.socket_path(worker["NLFIT_WORKER_DIR"], _identity(worker)), "status")
    changed = {**worker, "NLFIT_WORKER_SALT": "edited"}  # as if a package file had changed
    code, out, _ = _run(["fit", "runge.csv", "-m", "rational", "-f", "csv", "-q"], changed, cwd=tmp_path)
    assert code == 0 and out.startswith(b"name,value")  # served in-process meanwhile
    started_ = subprocess.run([*NLFIT, "worker", "start"], env=changed, capture_output=True, timeout=120)  # waits for the successor
    assert started_.returncode == 0, started_.stderr
    new = client.control(client.socket_path(worker["NLFIT_WORKER_DIR"], _identity(changed)), "status")
    assert new is not None and new["pid"] != old["pid"]
    assert client.control(old["socket"], "status") is None  # the old one was told to stop
    assert not os.path.exists(old["socket"])
    status = subprocess.run([*NLFIT, "worker", "status"], env=changed, capture_output=True, text=True, timeout=60)
    assert status.returncode == 0 and status.stdout.count("worker ") == 1 and "this installation" in status.stdout


def test_a_peer_of_another_version_is_refused(worker):
    path = client.socket_path(worker["NLFIT_WORKER_DIR"], _identity(worker))
    sock = client.connect(path)
    client.send_header(sock, {"identity": "0.0.0-other-00000000", "argv": ["models"], "cwd": "/", "env": {}})
    assert sock.recv(1) == b"R"
    sock.close()


def test_a_folder_that_is_not_private_is_not_used(tmp_path):
    folder = tmp_path / "w"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    env = _env(str(folder))
    code, out, err = _run(["worker", "start"], env)
    assert code == 2 and b"not private to this user" in err
    code, out, err = _run(["models"], env)  # the command still runs, in-process, and starts no worker there
    assert code == 0 and b"polynomial" in out
    assert not list(folder.glob("worker-*.sock"))


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a process as another user")
def test_another_user_gets_no_answer(worker):
    path = client.socket_path(worker["NLFIT_WORKER_DIR"], _identity(worker))
    os.chmod(worker["NLFIT_WORKER_DIR"], 0o711)  # let the other user reach the socket at all
    os.chmod(path, 0o666)
    probe = (  # becomes user 'nobody', then connects, asks for the status, and says what came back
        "import json, os, socket, struct, sys\n"
        "os.setgid(65534); os.setuid(65534)\n"
        "sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); sock.settimeout(30); sock.connect(sys.argv[1])\n"
        "body = json.dumps({'identity': sys.argv[2], 'control': 'status'}).encode()\n"
        "try:\n"
        "    sock.sendall(struct.pack('>I', len(body)) + body); answer = sock.recv(100)\n"
        "except (BrokenPipeError, ConnectionResetError):\n"
        "    answer = b''  # closed before the question was read\n"
        "print('unanswered' if answer == b'' else 'answered')\n"
    )
    identity = path.rsplit("worker-", 1)[1][: -len(".sock")]
    try:
        done = subprocess.run([sys.executable, "-S", "-c", probe, path, identity], capture_output=True, text=True, timeout=60)
    finally:  # the folder is private again for the other tests of the shared worker
        os.chmod(worker["NLFIT_WORKER_DIR"], 0o700)
        os.chmod(path, 0o600)
    assert done.stdout.strip() == "unanswered", done.stderr
    assert _served(worker) >= 0  # and the worker still answers its own user


def _slow_fit(tmp_path: Path, *more: str) -> list[str]:
    """A fit that runs until it is stopped (gradient descent with a tiny step), printing its
    progress on stderr: the line to synchronise on."""
    x = np.linspace(-1, 1, 5000)
    data = tmp_path / "slow.csv"
    data.write_text("x,y\n" + "".join(f"{a!r},{b!r}\n" for a, b in zip(x.tolist(), (1 / (1 + 10 * x * x)).tolist(), strict=True)))
    return [*NLFIT, "fit", str(data), "-m", "rational", "--p0", "1,0,1", "--method", "gd", "-g", "none", "--step", "1e-6",
            "--max-iter", "100000000", "--starts", "1", "-q", "--progress", *more]  # fmt: skip


def test_sigint_through_the_client_gives_the_interrupted_result(worker, tmp_path):
    command = _slow_fit(tmp_path, "-f", "json")
    before = _served(worker)
    with started(command, "nlfit: progress:", worker, stdout=subprocess.PIPE) as process:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    payload = json.loads(out)
    assert payload["status"] == "interrupted" and payload["counts"]["iterations"] > 0
    assert "nlfit: interrupted" in err
    assert _served(worker) == before + 1  # it was the worker's, and the worker is still there


def test_the_identity_covers_the_files_the_interpreter_and_the_compute_environment(monkeypatch):
    base = client.identity()
    assert base.startswith(__import__("nlfit").__version__ + "-") and base == client.identity()
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    other = client.identity()  # a worker started with other XLA flags computes differently
    assert other != base and client.installation(other) == client.installation(base)  # same installation
    monkeypatch.setenv("NLFIT_CACHE_DIR", "/elsewhere")
    assert client.identity() not in (base, other)
    monkeypatch.delenv("XLA_FLAGS")
    monkeypatch.delenv("NLFIT_CACHE_DIR")
    monkeypatch.setattr(sys, "prefix", "/another/venv")
    assert client.installation(client.identity()) != client.installation(base)
    monkeypatch.undo()
    monkeypatch.setenv("TPU_SKIP_MDS_QUERY", "1")  # set by JAX's own import: not part of it
    assert client.identity() == base
    monkeypatch.setenv("NLFIT_XLA_EMITTERS", "fusion")  # its programs compiled with other emitters
    assert client.identity() != base


def test_a_pipeline_of_two_served_commands_ends_and_matches(worker, tmp_path):
    """`nlfit generate | nlfit fit -`: whichever the worker serves first, the other waits or
    runs in-process, and a waiting command holds no descriptor (no end of file lost)."""
    off = {**worker, "NLFIT_WORKER": "off"}
    line = f"{' '.join(NLFIT)} generate runge --seed 2 --n 50 | {' '.join(NLFIT)} fit - -m rational -f csv -q"
    expected = subprocess.run(line, shell=True, env=off, capture_output=True, timeout=300)
    for _ in range(3):
        done = subprocess.run(line, shell=True, env=worker, capture_output=True, timeout=120)
        assert (done.returncode, done.stdout) == (expected.returncode, expected.stdout), done.stderr


def test_what_a_worker_cannot_do_runs_in_process(worker, tmp_path):
    """Descriptors other than 0-2 (/dev/fd/N, <(cmd)) and shell completion stay in-process;
    the client's umask applies to what a served command writes."""
    _data(tmp_path)
    before = _served(worker)
    done = subprocess.run(f"{' '.join(NLFIT)} fit <(cat runge.csv) -m rational -f csv -q", shell=True, executable="/bin/bash",
                          env=worker, cwd=tmp_path, capture_output=True, timeout=300)  # fmt: skip
    assert done.returncode == 0 and done.stdout.startswith(b"name,value"), done.stderr
    console_script = str(Path(sys.executable).parent / "nlfit")  # click's variable is named after it
    completion = subprocess.run([console_script], env={**worker, "_NLFIT_COMPLETE": "complete_bash", "COMP_WORDS": "nlfit fi", "COMP_CWORD": "1"},
                                capture_output=True, text=True, timeout=120)  # fmt: skip
    assert completion.returncode == 0 and "fit" in completion.stdout
    assert _served(worker) == before  # neither went to the worker
    served = subprocess.run(f"umask 077; {' '.join(NLFIT)} fit runge.csv -m rational -f json -q -o private.json", shell=True,
                            env=worker, cwd=tmp_path, capture_output=True, timeout=300)  # fmt: skip
    assert served.returncode == 0, served.stderr
    assert _served(worker) == before + 1
    assert (tmp_path / "private.json").stat().st_mode & 0o777 == 0o600


def test_a_worker_that_died_while_starting_is_not_waited_for(tmp_path):
    """The 'starting' lock names the starting worker's pid: a command that finds the lock of a
    dead one runs at once (in-process) and starts a new worker, instead of waiting."""
    folder = tempfile.mkdtemp(prefix="nw", dir="/tmp")
    env = _env(folder, NLFIT_CACHE_DIR=str(tmp_path / "cache"))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True).stdout.strip()
    Path(folder, "starting").write_text(dead)
    try:
        done = subprocess.run([*NLFIT, "models"], env=env, capture_output=True, timeout=120)
        assert done.returncode == 0 and b"polynomial" in done.stdout
        lock = Path(folder, "starting")
        assert not lock.exists() or lock.read_text() != dead  # the dead worker's lock was replaced, not respected
        started_ = subprocess.run([*NLFIT, "worker", "start"], env=env, capture_output=True, timeout=120)
        assert started_.returncode == 0, started_.stderr  # the replacement listens
    finally:
        subprocess.run([*NLFIT, "worker", "stop"], env=env, capture_output=True, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------- the client's rights and limits
# A worker runs a command only for a client with its own rights and limits (nlfit.client.context:
# ids, capabilities, namespaces, root, resource limits, cgroup), checked by the worker from
# /proc, not taken from the client's word; anything else runs in the client's own process.

WITHOUT_DAC = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--inh-caps", "-dac_override,-dac_read_search"]


def _can_drop_capabilities() -> bool:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        return False
    return subprocess.run([*WITHOUT_DAC, "true"], capture_output=True).returncode == 0


def _secret(tmp_path: Path) -> Path:
    """A data file of another user (nobody) that only that user may read."""
    _data(tmp_path)
    secret = tmp_path / "secret.csv"
    shutil.copy(tmp_path / "runge.csv", secret)
    os.chown(secret, 65534, 65534)
    secret.chmod(0o600)
    return secret


@pytest.mark.skipif(not _can_drop_capabilities(), reason="needs root and setpriv to drop CAP_DAC_OVERRIDE")
def test_a_client_without_the_right_to_read_a_file_cannot_read_it_through_the_worker(worker, tmp_path):
    secret = _secret(tmp_path)
    assert subprocess.run([*WITHOUT_DAC, "cat", str(secret)], capture_output=True).returncode != 0  # the client may not read it
    before = _served(worker)
    done = subprocess.run([*WITHOUT_DAC, *NLFIT, "fit", str(secret), "-m", "rational", "-f", "json", "-q"], env=worker, capture_output=True, timeout=300)
    assert done.returncode == 2 and b"Permission denied" in done.stderr and done.stdout == b"", done.stderr
    assert _served(worker) == before  # the worker (full root) served nothing
    # A client that names the worker's socket and identity itself is refused by the worker,
    # which reads the client's rights from /proc rather than taking its word.
    path = client.socket_path(worker["NLFIT_WORKER_DIR"], _identity(worker))
    probe = (
        "import os, sys; from nlfit import client\n"
        "sock = client.connect(sys.argv[1])\n"
        "client.send_header(sock, {'identity': sys.argv[2], 'argv': ['fit', sys.argv[3], '-m', 'rational'], 'cwd': '/', 'env': {}, 'umask': 18})\n"
        "print(sock.recv(1).decode())\n"
    )
    command = [*WITHOUT_DAC, sys.executable, "-c", probe, path, client.path_identity(path), str(secret)]
    lying = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert lying.stdout.strip() == "R", lying.stderr
    assert _served(worker) == before


def _unshare_works() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _unshare_works(), reason="needs root and unshare -m (a mount namespace)")
def test_a_client_in_another_mount_namespace_reads_and_writes_its_own_files(worker, tmp_path):
    """A bind mount over a folder in the client's namespace: the client's fit reads the file
    it sees, and its -o lands in its view, not in the worker's."""
    mine, shown = tmp_path / "mine", tmp_path / "shown"
    mine.mkdir()
    shown.mkdir()
    x = np.linspace(0.0, 1.0, 30)
    for folder, slope in ((mine, 7.0), (shown, -3.0)):
        (folder / "line.csv").write_text("x,y\n" + "".join(f"{a!r},{slope * a + 1!r}\n" for a in x.tolist()))
    line = (f"mount --bind {mine} {shown} && {' '.join(NLFIT)} fit {shown}/line.csv -m 'a*x+b' -f json -q --starts 1 "
            f"&& {' '.join(NLFIT)} fit {shown}/line.csv -m 'a*x+b' -q --starts 1 -o {shown}/out.json")  # fmt: skip
    done = subprocess.run(["unshare", "-m", "sh", "-c", line], env=worker, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["params"]["a"]["value"] == pytest.approx(7.0, rel=1e-9)  # the client's file
    assert (mine / "out.json").exists() and not (shown / "out.json").exists()  # written in the client's view


def test_the_limits_of_the_command_that_started_a_worker_bind_only_commands_with_those_limits(tmp_path):
    """A worker started under `ulimit -f 4` (4 kB files) serves no command without that limit:
    such a command writes its 10 kB result in-process."""
    _data(tmp_path)
    with _started_worker(tmp_path / "cache", RLIMIT_FSIZE=4096) as limited:
        (socket_,) = Path(limited["NLFIT_WORKER_DIR"]).glob("worker-*.sock")  # the limited worker's
        before = client.control(str(socket_), "status")["served"]
        command = [*NLFIT, "fit", "runge.csv", "-m", "rational", "-q", "-o", "out.json"]
        done = subprocess.run(command, env=limited, cwd=tmp_path, capture_output=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert json.loads((tmp_path / "out.json").read_text())["model"]
        assert (tmp_path / "out.json").stat().st_size > 4096
        assert client.control(str(socket_), "status")["served"] == before


def test_the_client_stream_encoding_is_the_commands(worker, tmp_path):
    """PYTHONIOENCODING=latin-1: the served command writes the bytes an in-process one writes."""
    x = np.linspace(0.0, 2.0, 25)
    (tmp_path / "e.csv").write_text("x,é\n" + "".join(f"{a!r},{2 * a + 1!r}\n" for a in x.tolist()), encoding="utf-8")
    args = ["fit", "e.csv", "--y", "é", "-m", "a*x+b", "-f", "csv", "--starts", "1"]
    before = _served(worker)
    latin = {**worker, "PYTHONIOENCODING": "latin-1"}
    served = _run(args, latin, cwd=tmp_path)
    alone = _run(args, {**latin, "NLFIT_WORKER": "off"}, cwd=tmp_path)
    assert _served(worker) == before + 1
    assert served[0] == alone[0] == 0, served[2]
    assert "×".encode("latin-1") in served[2] and "×".encode() not in served[2]  # the report's "lm × trust-region"
    assert TIMING.sub(rb"\1\3T", served[1]) == TIMING.sub(rb"\1\3T", alone[1])
    assert TIMING.sub(rb"\1\3T", served[2]) == TIMING.sub(rb"\1\3T", alone[2])


def _wait_until_idle(env) -> dict:
    """The worker's status once it runs no command (its 'wait' answer comes then)."""
    status = client.control(client.socket_path(env["NLFIT_WORKER_DIR"], _identity(env)), "wait", timeout=120.0)
    assert status is not None and not status["running"]
    return status


def test_a_killed_client_leaves_its_output_as_it_was(worker, tmp_path):
    """kill -9 of the client mid-fit: as in-process, the old -o file stays and no temporary
    file is left (the worker ends the command; only a live client renames outputs)."""
    out = tmp_path / "out.json"
    out.write_text("the old result\n")
    command = _slow_fit(tmp_path, "-o", str(out))
    before = _served(worker)
    with started(command, "nlfit: progress:", worker) as process:
        process.kill()
        process.wait()
    assert _wait_until_idle(worker)["served"] == before + 1
    assert out.read_text() == "the old result\n"
    assert not list(tmp_path.glob(".nlfit-*"))


def test_a_killed_worker_is_replaced_by_the_next_command(own_worker, tmp_path):
    """SIGKILL (the OOM killer) leaves the worker's socket behind: the next command finds
    nobody listening, runs in-process and starts a new worker."""
    path = client.socket_path(own_worker["NLFIT_WORKER_DIR"], _identity(own_worker))
    old = client.control(path, "status")["pid"]
    os.kill(old, signal.SIGKILL)
    assert os.path.exists(path)  # its socket stays
    done = _run(["models"], own_worker)
    assert done[0] == 0 and b"polynomial" in done[1]
    # The command started a successor: it is starting (its lock names it), or it has started,
    # which it says by removing the lock once its socket is in place.
    try:
        starting = int(Path(own_worker["NLFIT_WORKER_DIR"], "starting").read_text())
    except FileNotFoundError:
        starting = client.control(path, "status")["pid"]
    assert starting not in (0, old)


def test_a_relative_worker_folder_is_refused_in_one_line(tmp_path):
    env = _env("relative-folder")
    code, out, err = _run(["models"], env, cwd=tmp_path)
    assert code == 0 and b"polynomial" in out
    assert err.count(b"\n") == 1 and b"NLFIT_WORKER_DIR" in err and b"absolute" in err
    assert not (tmp_path / "relative-folder").exists()


def test_a_dask_command_through_the_worker_leaves_no_process_holding_the_clients_stderr(worker, tmp_path):
    """`nlfit fit --engine dask ... 2>&1 | cat` ends: no process the command started (a Dask
    cluster, Python's resource tracker) keeps the client's stderr open."""
    pytest.importorskip("distributed")
    rows = "".join(f"{g},{x},{(g + 1) * x + 0.5}\n" for g in range(3) for x in range(6))
    (tmp_path / "groups.csv").write_text("g,x,y\n" + rows)
    line = f"{' '.join(NLFIT)} fit groups.csv --group-by g -m 'a*x+b' --engine dask --threads 1 -f csv -q 2>&1 | cat"
    done = subprocess.run(line, shell=True, env=worker, cwd=tmp_path, capture_output=True, timeout=240)
    assert done.returncode == 0 and done.stdout.count(b"\n") >= 4, done.stdout + done.stderr


def test_a_killed_client_gets_nothing_more_on_its_stdout(worker, tmp_path):
    """kill -9 of the client mid-fit: as in-process, no result reaches its stdout afterwards
    (the worker's command ends without writing one)."""
    command = _slow_fit(tmp_path, "-f", "csv")
    before = _served(worker)
    with open(tmp_path / "stdout.txt", "wb") as stdout, started(command, "nlfit: progress:", worker, stdout=stdout) as process:
        process.kill()
        process.wait()
    assert _wait_until_idle(worker)["served"] == before + 1
    assert (tmp_path / "stdout.txt").read_bytes() == b""


@pytest.mark.skipif(not _can_drop_capabilities(), reason="needs root and setpriv to drop CAP_DAC_OVERRIDE")
def test_a_process_with_fewer_rights_posing_as_the_worker_is_not_used(tmp_path):
    """A process of the same user but with fewer rights binds the worker's socket name and,
    when a client comes, asks it to rename a file of its choosing over a protected one. The
    client checks the worker's rights as the worker checks the client's, and never renames a
    path on the worker's word: the command runs in-process, the protected file stays."""
    _data(tmp_path)
    protected = tmp_path / "protected"
    protected.mkdir(mode=0o700)
    victim = protected / "victim.txt"
    victim.write_text("precious\n")
    os.chown(protected, 65534, 65534)
    payload = tmp_path / ".nlfit-aaaaaaaa.tmp"
    payload.write_text("attacker\n")
    folder = tempfile.mkdtemp(prefix="nw", dir="/tmp")
    env = _env(folder, NLFIT_CACHE_DIR=str(tmp_path / "cache"))
    fake = (
        "import json, os, socket, struct, sys\n"
        "sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); sock.bind(sys.argv[1]); sock.listen(1)\n"
        "print('listening', flush=True)\n"
        "conn, _ = sock.accept()\n"
        "(size,) = struct.unpack('>I', conn.recv(4, socket.MSG_WAITALL)); conn.recv(size, socket.MSG_WAITALL)\n"
        "conn.sendall(b'G'); conn.recvmsg(1, socket.CMSG_SPACE(24))\n"
        "body = json.dumps([sys.argv[2], sys.argv[3]]).encode()\n"
        "conn.sendall(b'T' + struct.pack('>I', len(body)) + body + b'X' + struct.pack('>i', 0)); conn.recv(1)\n"
    )
    path = client.socket_path(folder, _identity(env))
    try:
        with subprocess.Popen([*WITHOUT_DAC, sys.executable, "-c", fake, path, str(payload), str(victim)], stdout=subprocess.PIPE, text=True) as impostor:
            assert impostor.stdout.readline() == "listening\n"
            done = _run(["fit", "runge.csv", "-m", "rational", "-f", "csv", "-q"], env, cwd=tmp_path)
            impostor.kill()
        assert done[0] == 0 and done[1].startswith(b"name,value"), done[2]  # run in-process
        assert victim.read_text() == "precious\n" and payload.exists()
    finally:
        subprocess.run([*NLFIT, "worker", "stop"], env=env, capture_output=True, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


def test_descriptor_paths_in_any_spelling_and_cpu_limits_run_in_process(worker, tmp_path):
    """/dev/./fd/3, fd/4 from /dev and a folder that links to /dev/fd name this process's
    descriptors, which the worker does not have; a CPU-time limit would count the worker's
    whole life. All run in-process."""
    (tmp_path / "fdlink").symlink_to("/dev/fd")
    before = _served(worker)
    nlfit = " ".join(NLFIT)
    for line, written in [  # generate: quick in-process (inputs and outputs are told apart by the same rule)
        (f"{nlfit} generate runge --n 5 -o /dev/./fd/3 3>three.csv", "three.csv"),
        (f"cd /dev && {nlfit} generate runge --n 5 -o fd/4 4>{tmp_path}/four.csv", "four.csv"),
        (f"{nlfit} generate runge --n 5 -o fdlink/4 4>linked.csv", "linked.csv"),
    ]:
        done = subprocess.run(line, shell=True, env=worker, cwd=tmp_path, capture_output=True, timeout=300)
        assert done.returncode == 0, (line, done.stderr)
        assert (tmp_path / written).read_text().startswith("x,y"), line
    line = f"ulimit -t 600; {nlfit} models"
    done = subprocess.run(line, shell=True, env=worker, capture_output=True, timeout=300)
    assert done.returncode == 0 and b"polynomial" in done.stdout
    assert _served(worker) == before


def test_a_worker_holding_too_many_memory_mappings_retires_after_its_command(tmp_path):
    """Compiled programs keep memory mappings for good; past the kernel's limit a process can
    no longer compile. A worker over its limit (here 1) serves the command, lets the client
    rename its output, and exits; the next command still gets its result."""
    _data(tmp_path)
    with _started_worker(cache_dir() or tmp_path / "cache", {"NLFIT_WORKER_MAX_MAPS": "1"}) as env:
        path = client.socket_path(env["NLFIT_WORKER_DIR"], _identity(env))
        pid = client.control(path, "status")["pid"]
        gone = os.pidfd_open(pid)
        try:
            args = ["fit", "runge.csv", "-m", "rational", "--starts", "1", "-q", "-f", "json", "-o", "result.json"]
            code, _, err = _run(args, env, cwd=tmp_path)
            assert code == 0, err
            assert select.select([gone], [], [], 120)[0] == [gone]  # the worker process ended
        finally:
            os.close(gone)
        assert json.loads((tmp_path / "result.json").read_text())["success"] is True
        off = {**env, "NLFIT_WORKER": "off"}
        again = _run(["fit", "runge.csv", "-m", "rational", "--starts", "1", "-q", "-f", "csv"], env, cwd=tmp_path)
        # (its stderr says that it started a successor)
        assert again[:2] == _run(["fit", "runge.csv", "-m", "rational", "--starts", "1", "-q", "-f", "csv"], off, cwd=tmp_path)[:2]
