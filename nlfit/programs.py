"""nlfit's compiled programs, and the executables kept on disk so that a new process does not
trace them again.

A fresh process that fits a known model spends most of its time before the first iteration
in JAX, not in XLA: tracing the solver's programs to jaxprs and lowering them to StableHLO
(1.2 s of the 2.2 s a default rational fit took after its imports, measured with
``jax_log_compiles``), only
for JAX's persistent compilation cache to find the compiled program by the hash of that
StableHLO. A ``Program`` skips both: the first time a program is compiled for a signature
(the static arguments, the tree of the others and their shapes, dtypes and weak types), its
executable is serialized (``jax.experimental.serialize_executable``) into ``aot/`` beside
JAX's cache (``nlfit._jax.cache_dir``); a later process with the same signature loads it
and calls it without tracing.

The file's name is a hash of everything that decides the program: the function's name, the
static arguments and the argument tree (pickled: their full state, not their ``repr``), each
argument's shape, dtype and weak type, the compiler options, and this process's ``context``
(the content of every nlfit source file, the JAX and jaxlib versions, the JAX_* and XLA_*
variables, x64, the platform, the device count and the host CPU's model and instruction-set
flags). A static argument whose class defines ``program_key()`` is keyed by that instead of
its full state: a tape runner carries its formula for the code outside the programs, but its
programs depend on the bucket only, so every formula of a bucket shares one file. A program is
named by its function's module and qualified name: what the function reads at trace time
beyond its arguments (module globals, settings) must be fixed by the source files, which the
context covers, or by the JAX_*/XLA_* variables; a value set at run time any other way would
not be in the key, so no program here reads one. A signature that cannot be pickled (a
closure among the static arguments) or arguments placed on another device than the default
one (a batch spread over devices) run through ``jax.jit`` as before. Nothing here changes
what is computed: a loaded executable is the one that ``jax.jit`` compiled for the same
signature. ``NLFIT_NO_CACHE=1`` turns this off with JAX's cache.

What is stored is checked: the executable is compiled afresh for it (not taken from JAX's
cache, see ``_without_jax_cache``), serialized, loaded back and run on the same arguments,
and written only if the copy gives the same output bit for bit; programs that call into C
functions other than LAPACK's are not stored (``_storable``). An entry that cannot be
loaded, or whose first call fails, is removed and the program compiled again; one that
cannot be written is not kept. In every case the fit goes on.

Small problems are compiled with XLA's cheap settings (``FAST_COMPILE``): there compiling
takes seconds and running milliseconds, so a 30-70 % shorter compile wins; large ones keep
the full optimization (its kernels ran about twice as fast at 10^6 points), and so do the
programs that run many times or are shared (``optimize``): the solver's loop, whose
iterations a fit repeats hundreds of times (rational, 200 points, 32 starts: the default
fit's solve 0.16 s against 0.41 s, for 0.9 s more compile once per machine), and the
programs every formula of a tape bucket shares (``nlfit.models.tape``): the interpreter's
loop ran 3x faster. Every Program is compiled with XLA:CPU's classic emitters where that was
measured to compile faster (``_emitters``).
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import io
import os
import pickle
import re
import sys
import threading
import weakref
from pathlib import Path

import numpy as np

from nlfit._jax import cache_dir, cache_warning, jax

FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
FAST_COMPILE_ELEMENTS = 1 << 17  # residuals x members up to which a problem counts as small
_PROGRAMS: dict = {}
_SCALARS = (bool, int, float, complex)


def compiled(function, static_argnames, elements: int, optimize: bool = False) -> Program:
    """``function`` as a Program, with FAST_COMPILE options when ``elements`` (the size of
    the residual arrays of all members together) is small and the program is not to be
    ``optimize``d (one that runs many times, or a tape bucket's)."""
    fast = elements <= FAST_COMPILE_ELEMENTS and not optimize
    key = (function, fast)
    if key not in _PROGRAMS:
        _PROGRAMS[key] = Program(function, static_argnames, FAST_COMPILE if fast else None)
    return _PROGRAMS[key]


_ALL: weakref.WeakSet = weakref.WeakSet()


def _emitters() -> dict:
    """XLA:CPU's classic LLVM emitters instead of its newer fusion emitters, for every Program
    (not the operations run one by one outside them), on the jaxlib where that was measured
    (0.10): a first fit's compiles took 31-49 % less time, and the same fits again ran from
    21 % faster (a formula at 10^6 points) to 12 % slower (Chebyshev of degree 11 at 20,000
    points) (``benchmarks/compile_options.py --repeat 3``, five cases, medians). Other
    versions keep XLA's default: the option is unknown to older ones and may be gone from
    newer ones, and an unknown option fails the compile. ``NLFIT_XLA_EMITTERS=fusion`` keeps XLA's default here too; it is read once, when
    this module is imported (a worker's clients with another value find another worker:
    ``nlfit.client.SETTINGS_NAMES``)."""
    import jaxlib

    if os.environ.get("NLFIT_XLA_EMITTERS", "") == "fusion" or not jaxlib.__version__.startswith("0.10."):
        return {}
    return {"xla_cpu_use_fusion_emitters": False}


EMITTERS = _emitters()


def clear() -> None:
    """Forget the executables this process has loaded (``jax.clear_caches`` for Programs):
    each holds its machine code's memory mappings."""
    for each in list(_ALL):
        each.loaded.clear()


def program(function=None, *, static_argnames=()):
    """Decorator: ``function`` as a Program with XLA's default options."""
    if function is None:
        return lambda f: Program(f, static_argnames)
    return Program(function, static_argnames)


class Program:
    """``jax.jit(function, static_argnames, compiler_options)`` whose executables are kept
    on disk (the module's docstring). Called as the jitted function is."""

    def __init__(self, function, static_argnames=(), compiler_options=None):
        static_argnames = (static_argnames,) if isinstance(static_argnames, str) else tuple(static_argnames)
        compiler_options = {**EMITTERS, **(compiler_options or {})} or None
        self.jitted = jax.jit(function, static_argnames=static_argnames, compiler_options=compiler_options)
        self.signature = inspect.signature(function)
        self.static = frozenset(static_argnames)
        self.name = f"{function.__module__}.{function.__qualname__}"
        self.options = tuple(sorted((compiler_options or {}).items()))
        self.loaded: dict = {}  # this process's executables (None: run through jax.jit) by signature
        self.lock = threading.Lock()
        _ALL.add(self)

    def __call__(self, *args, **kwargs):
        folder = _folder()
        if folder is None:
            return self.jitted(*args, **kwargs)
        bound = self.signature.bind(*args, **kwargs)  # defaults left out, as jax.jit leaves them
        dynamic = {name: value for name, value in bound.arguments.items() if name not in self.static}
        static = tuple((name, value) for name, value in bound.arguments.items() if name in self.static)
        leaves, tree = jax.tree.flatten(dynamic)
        specs = _specs(leaves)
        if specs is None:  # an argument on another device, or of a kind not described here
            return self.jitted(*args, **kwargs)
        try:
            key = (static, tree, specs)
            executable = self.loaded.get(key, False)
        except TypeError:  # an unhashable static argument: jax.jit says so
            return self.jitted(*args, **kwargs)
        if executable is False:
            with self.lock:
                executable = self.loaded.get(key, False)
                if executable is False:
                    executable, out = self._first_call(folder, static, tree, specs, dynamic)
                    self.loaded[key] = executable
                    return out
        if executable is None:
            return self.jitted(*args, **kwargs)
        return executable(**dynamic)

    def _first_call(self, folder: Path, static, tree, specs, dynamic):
        """(executable for this signature or None for jax.jit, this call's output): loaded
        from disk, or compiled and stored once a loaded copy has given the same output."""
        from jax.experimental import serialize_executable

        try:
            digest = hashlib.sha256(context().encode())
            digest.update(_key_bytes((self.name, static, tree, specs, self.options)))
        except Exception:  # a closure or another object pickle cannot name: no file
            return None, self.jitted(**dynamic, **dict(static))
        path = folder / f"{self.name.rsplit('.', 1)[-1]}-{digest.hexdigest()[:32]}.exe"
        stored = _read(path) if _prepare() else None
        if stored is not None:
            try:
                loaded = serialize_executable.deserialize_and_load(*pickle.loads(stored), execution_devices=list(_default_devices()))
                return loaded, loaded(**dynamic)
            except Exception:  # written by another build of jaxlib, damaged, or incomplete
                _remove(path)
                cache_warning("read", folder.parent)
        with _without_jax_cache():
            executable = self.jitted.lower(**dynamic, **dict(static)).compile()
        out = executable(**dynamic)
        try:
            if _storable(executable):
                blob = pickle.dumps(serialize_executable.serialize(executable), protocol=5)
                copy = serialize_executable.deserialize_and_load(*pickle.loads(blob), execution_devices=list(_default_devices()))
                if _same(copy(**dynamic), out):
                    _write(path, blob)
        except Exception:  # not serializable, or a copy that does not run: not kept
            pass
        return executable, out


def _key_bytes(signature) -> bytes:
    """``signature`` pickled in full, except that an object whose class defines
    ``program_key()`` (one that carries more than its equality compares, such as a tape runner
    and its formula) is written as that key, wherever it sits among the static arguments."""
    buffer = io.BytesIO()
    _KeyPickler(buffer, protocol=5).dump(signature)
    return buffer.getvalue()


class _KeyPickler(pickle.Pickler):
    def reducer_override(self, obj):
        key = getattr(type(obj), "program_key", None)
        if key is None or isinstance(obj, type):
            return NotImplemented
        return _program_key, (key(obj),)


def _program_key(key):
    return key


def _same(a, b) -> bool:
    """Bit for bit the same outputs (NaN where NaN)."""
    left, right = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(left) == len(right) and all(
        np.array_equal(np.asarray(x), np.asarray(y), equal_nan=np.asarray(x).dtype.kind in "fc") for x, y in zip(left, right, strict=True)
    )


def _without_jax_cache():
    """A context in which JAX's persistent cache is neither read nor written. An executable
    that JAX's cache returned serializes without some of its machine code (a loaded copy
    failed: "Function multiply_multiply_fusion not found"), and so, at times, does one
    compiled after such an executable with kernels of the same name was loaded: the one to
    store is compiled afresh (once per signature and machine), and kept only if a loaded copy
    gives the same output (``Program._first_call``)."""
    try:
        from jax._src import config

        return config.enable_compilation_cache(False)
    except Exception:
        return contextlib.nullcontext()


def _storable(executable) -> bool:
    """Whether a loaded copy of ``executable`` can run: its custom calls (XLA calls into C
    functions that jaxlib registers) are all LAPACK's, whose functions ``_prepare`` sets
    up before a load. JAX does that when it lowers a program that uses them; a loaded
    executable skips lowering, and its first LAPACK call crashed the process without it."""
    targets = set(re.findall(r'custom_call_target="([^"]+)"', executable.as_text() or ""))
    return all(target.startswith("lapack_") for target in targets)


_PREPARED: list = []


def _prepare() -> bool:
    """LAPACK's kernels set up for loaded executables (see ``_storable``); False where this
    JAX has no such step (nothing is then loaded)."""
    if not _PREPARED:
        try:
            from jax._src.lax import linalg

            with _lapack_modules():
                linalg.initialize_lapack()
            _PREPARED.append(True)
        except Exception:
            _PREPARED.append(False)
    return _PREPARED[0]


_CYTHON_LAPACK = ("scipy.linalg.cython_blas", "scipy.linalg.cython_lapack")


@contextlib.contextmanager
def _lapack_modules():
    """jaxlib takes LAPACK's functions from scipy's two Cython modules, which it imports by
    name. Importing them the usual way runs ``scipy.linalg``'s ``__init__`` first, and with
    it scipy's array-API layer, which touches every lazy attribute of numpy (numpy.f2py
    among them): 0.08-0.2 s of a default fit's 1.4 s from a new process, for two modules
    that need none of it. So the two are loaded from their files into ``sys.modules`` for
    the call, and taken out after it, so that a later ``import scipy.linalg`` runs as usual
    (it finds the same extension modules again). Where the files are not where scipy keeps
    them, or one is already imported, nothing is done and jaxlib imports them itself."""
    import importlib.machinery
    import importlib.util

    loaded = []
    try:
        if not any(name in sys.modules for name in (*_CYTHON_LAPACK, "scipy.linalg")):
            spec = importlib.util.find_spec("scipy")
            folder = Path(next(iter(spec.submodule_search_locations or ())), "linalg") if spec else None
            for name in _CYTHON_LAPACK:
                leaf = name.rsplit(".", 1)[1]
                paths = [folder / (leaf + suffix) for suffix in importlib.machinery.EXTENSION_SUFFIXES] if folder else []
                path = next((p for p in paths if p.is_file()), None)
                if path is None:
                    break
                module_spec = importlib.util.spec_from_file_location(name, path)
                module = importlib.util.module_from_spec(module_spec)
                sys.modules[name] = module
                loaded.append(name)
                module_spec.loader.exec_module(module)
    except Exception:  # jaxlib's own import then does it, from a clean sys.modules
        for name in loaded:
            sys.modules.pop(name, None)
        loaded = []
    try:
        yield
    finally:
        for name in loaded:
            sys.modules.pop(name, None)


def _specs(leaves) -> tuple | None:
    """Shape, dtype and weak type of each argument, as jax.jit distinguishes them; None for
    an array committed to a device other than the default one, or an unknown kind of leaf."""
    specs = []
    for leaf in leaves:
        if isinstance(leaf, jax.core.Tracer):  # called inside another traced function
            return None
        if isinstance(leaf, jax.Array):
            if leaf.committed and leaf.sharding.device_set != _default_devices():
                return None
            specs.append((leaf.shape, leaf.dtype.str, bool(leaf.weak_type)))
        elif isinstance(leaf, (np.ndarray, np.generic)):
            specs.append((leaf.shape, leaf.dtype.str, False))
        elif type(leaf) in _SCALARS:
            specs.append(type(leaf).__name__)
        else:
            return None
    return tuple(specs)


_DEFAULT: list = []


def _default_devices() -> set:
    if not _DEFAULT:
        _DEFAULT.append({jax.devices()[0]})
    return _DEFAULT[0]


_CONTEXT: list = []


def context() -> str:
    """What decides every compiled program beside its own signature (the module's docstring)."""
    if not _CONTEXT:
        import jaxlib

        digest = hashlib.sha256()
        root = Path(__file__).resolve().parent
        for path in sorted(root.rglob("*.py")):
            if "__pycache__" not in path.parts:
                digest.update(f"{path.relative_to(root)}\0".encode())
                digest.update(path.read_bytes())
        environment = sorted((k, v) for k, v in os.environ.items() if k.startswith(("JAX_", "XLA_")))
        devices = jax.devices()
        _CONTEXT.append(
            f"{digest.hexdigest()}\0{jax.__version__}\0{jaxlib.__version__}\0{environment}\0{jax.config.jax_enable_x64}\0"
            f"{devices[0].platform}\0{getattr(devices[0], 'device_kind', '')}\0{len(devices)}\0{_host_cpu()}"
        )
    return _CONTEXT[0]


def _host_cpu() -> str:
    """The host CPU's model and instruction-set flags: an executable compiled for one CPU may use
    instructions another lacks (a cache folder shared over NFS), so they name the program too."""
    import platform

    wanted = ("vendor_id", "model name", "flags", "Features", "CPU implementer", "CPU part")
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            lines = handle.read().split("\n\n", 1)[0].splitlines()  # the first processor
    except OSError:
        lines = []
    fields = [line for line in lines if line.split(":", 1)[0].strip() in wanted]
    return "\n".join(fields) or f"{platform.machine()} {platform.processor()}"


def _folder() -> Path | None:
    """``aot/`` in JAX's compilation cache folder, created private to the user; None when the
    cache is off or the folder is not the user's own."""
    if not _FOLDER:
        _FOLDER.append(_make_folder())
    return _FOLDER[0]


_FOLDER: list = []


def _make_folder() -> Path | None:
    base = cache_dir()
    if base is None:
        return None
    path = base / "aot"
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = path.stat()
    except OSError:
        return None
    # The executables are machine code that this process runs: only from a folder that no
    # one else can write into.
    if info.st_uid != os.getuid() or info.st_mode & 0o022:
        return None
    return path


def _read(path: Path) -> bytes | None:
    try:
        with open(path, "rb") as file:
            if os.fstat(file.fileno()).st_uid != os.getuid():
                return None
            return file.read()
    except OSError:
        return None


def _write(path: Path, data: bytes) -> None:
    """Atomically: another process reads the whole entry or none."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    try:
        with open(temporary, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except OSError:
        _remove(temporary)


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
