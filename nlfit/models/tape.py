"""Formulas as data: a user formula becomes a *tape* that one compiled program evaluates.

A tape is a list of instructions over a register file. Registers 0 .. P-1 hold the
parameters, P .. P+V-1 the data columns, and instruction i writes register P+V+i from one or
two earlier registers (``a``, ``b``) or its constant. The program's output is the last
register. Tapes are padded to a length bucket (``LENGTHS``) with copies of their last
register, and the parameters to a parameter bucket (``nlfit.models.padded``: registers
that no instruction reads), so the solver, the multistart and the polish are compiled once
per (parameter bucket, column count, length bucket, data shape) and take the tape as data:
a new formula, new constants, another parameter order or another parameter count of the
bucket compile nothing.

``Runner`` is the static stand-in for the formula in a ``Problem`` (its equality is the
bucket only); the tape itself rides in ``Problem.tape`` as arrays with the problems' leading
group axis. Derivatives come from JAX through the interpreter (``lax.scan`` over the
instructions, ``lax.switch`` over the operations), forward or reverse. The tape must stay
unbatched: under ``vmap`` a batched switch evaluates every operation (15x slower) and the
derivatives of the ones not taken can turn a zero cotangent into NaN; batches of groups are
therefore mapped with ``nlfit.problem.vmap_groups``, which gives every group the one tape.

The tape serves small single fits (``runner_for``): there a new formula costs no compile.
Larger fits and grouped fits use the formula's own compiled program
(``FormulaModel.predict``), which runs faster per row (``benchmarks/tape.py``).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

import numpy as np

from nlfit.models.padded import Padded, padded_count

OPS = (
    "copy", "const", "add", "sub", "mul", "div", "pow", "pow_data", "pow_data_base", "neg",
    "exp", "log", "log10", "sqrt", "sin", "cos", "tan", "arcsin", "arccos", "arctan",
    "sinh", "cosh", "tanh", "abs",
)  # fmt: skip
CODE = {name: i for i, name in enumerate(OPS)}
UNARY = {"copy", "neg"} | set(OPS[OPS.index("exp") :])  # the operations that read only a
LENGTHS = (16, 32, 64, 128, 256)
MAX_WORK = 1 << 14  # rows x (padded parameters + 1) x instructions up to which a single fit runs from its tape


@dataclass(frozen=True)
class Tape:
    """The instructions of one formula (numpy arrays of the bucket's length)."""

    ops: np.ndarray  # (L,) int32, indices into OPS: the pass over the parameters
    a: np.ndarray  # (L,) int32, first operand register
    b: np.ndarray  # (L,) int32, second operand register
    constants: np.ndarray  # (L,) float64, the value of a 'const' instruction
    data_ops: np.ndarray  # (L,) int32: the pass over the data alone (``run``)
    data_a: np.ndarray  # (L,) int32
    n_params: int
    n_columns: int
    used: int  # instructions before the padding

    @property
    def length(self) -> int:
        return int(self.ops.shape[0])

    def arrays(self, groups: int | None = None):
        """The tape as the ``Problem.tape`` leaves: (ops, a, b, constants, data_ops, data_a),
        with a leading axis of ``groups`` copies when given."""
        leaves = (self.ops, self.a, self.b, self.constants, self.data_ops, self.data_a)
        if groups is None:
            return leaves
        return tuple(np.broadcast_to(v, (groups, *v.shape)).copy() for v in leaves)


def compile_tape(model, n_params: int | None = None) -> Tape | None:
    """The tape of a ``FormulaModel``'s right side, or None when it is longer than the
    largest bucket. ``n_params``: the registers kept for parameters (at least the model's;
    more for a parameter vector padded to its bucket, ``nlfit.models.padded``)."""
    if any(isinstance(node, ast.Call) and len(node.args) != 1 for node in ast.walk(model.rhs)):
        return None  # a function of several arguments (voigt): the formula's own compiled program
    names = model.parameter_names
    columns = model.x_names
    n_params, n_columns = max(len(names), n_params or 0), len(columns)
    base = n_params + n_columns
    ops, a, b, constants, dependent = [], [], [], [], []
    seen: dict[str, int] = {}

    def depends(register: int) -> bool:
        return register < n_params or (register >= base and dependent[register - base])

    def emit(op: str, first: int = 0, second: int = 0, value: float = 0.0) -> int:
        reads = (first,) if op in UNARY else (first, second) if op != "const" else ()
        dependent.append(any(depends(r) for r in reads))
        ops.append(CODE[op])
        a.append(first)
        b.append(second)
        constants.append(value)
        return base + len(ops) - 1

    def visit(node: ast.expr) -> int:
        key = ast.dump(node)
        if key in seen:
            return seen[key]
        register = _visit(node)
        seen[key] = register
        return register

    def _visit(node: ast.expr) -> int:
        if not _uses_names(node, model):  # numbers, pi and e: folded here
            return emit("const", value=float(_fold(node, model)))
        if isinstance(node, ast.Name):
            kind, key = model._lookup(node.id)
            return key if kind == "param" else n_params + columns.index(key)
        if isinstance(node, ast.UnaryOp):
            inner = visit(node.operand)
            return emit("neg", inner) if isinstance(node.op, ast.USub) else inner
        if isinstance(node, ast.Call):
            from nlfit.models.expression import FUNCTIONS

            return emit(FUNCTIONS[node.func.id], visit(node.args[0]))
        left, right = visit(node.left), visit(node.right)
        if isinstance(node.op, ast.Pow):  # a base or an exponent free of parameters is not differentiated
            kind = "pow_data" if not depends(right) else "pow_data_base" if not depends(left) else "pow"
            return emit(kind, left, right)
        return emit({ast.Add: "add", ast.Sub: "sub", ast.Mult: "mul", ast.Div: "div"}[type(node.op)], left, right)

    last = visit(model.rhs)
    emit("copy", last)  # the output is always the last register
    used = len(ops)
    length = next((size for size in LENGTHS if size >= used), None)
    if length is None:
        return None
    out = base + used - 1
    for _ in range(length - used):
        out = emit("copy", out)
    # Two passes (``run``): the instructions free of parameters first, on the data alone and
    # not differentiated; then the others, where each of the first keeps its value (a copy of
    # its own register). A zero derivative of sqrt(x) at x = 0 then stays a zero, not 0 * inf.
    dependent_ops = np.asarray(dependent)
    code = np.asarray(ops, dtype=np.int32)
    own = base + np.arange(length, dtype=np.int32)
    return Tape(
        ops=np.where(dependent_ops, code, CODE["copy"]).astype(np.int32),
        a=np.where(dependent_ops, np.asarray(a, dtype=np.int32), own).astype(np.int32),
        b=np.asarray(b, dtype=np.int32),
        constants=np.asarray(constants, dtype=np.float64),
        data_ops=np.where(dependent_ops, CODE["const"], code).astype(np.int32),
        data_a=np.asarray(a, dtype=np.int32),
        n_params=n_params,
        n_columns=n_columns,
        used=used,
    )


def _uses_names(node: ast.expr, model) -> bool:
    """Whether ``node`` reads a parameter or a data column (pi and e alone are numbers)."""
    from nlfit.models.expression import CONSTANTS, _names_in_order

    return any(n not in CONSTANTS or n in model.x_names or n in model.parameter_names for n in _names_in_order(node))


def _fold(node: ast.expr, model) -> float:
    """The value of a subexpression of numbers, pi and e (numpy, float64)."""
    from nlfit.models.expression import _build

    with np.errstate(all="ignore"):
        return float(_build(node, model._lookup, np)(None, {}))


@dataclass(frozen=True)
class Runner:
    """The static part of a tape fit: what a compiled program depends on (the bucket). Two
    formulas of one bucket give equal runners, so they share every compiled program; the
    formula itself, for what is computed outside the compiled programs (start rules, names),
    is the ``source`` of the ``nlfit.models.padded.Padded`` that holds the runner."""

    n_params: int
    n_columns: int
    length: int

    def program_key(self) -> tuple:
        """What names this runner's compiled programs on disk (``nlfit.programs``): the bucket,
        as equality compares it, without the formula."""
        return ("tape.Runner", self.n_params, self.n_columns, self.length)

    def predict(self, params, x):
        raise TypeError("a tape runner evaluates through nlfit.problem.model_values (it needs the problem's tape)")

    def run(self, tape, params, x):
        """The formula's values at the rows of ``x`` ((n,) or (n, V)) for ``params`` (P,)."""
        return run(tape, params, x, self.n_params, self.n_columns)


def runner_for(model, rows: int, grouped: bool = False) -> tuple[Padded, Tape] | None:
    """(static model, tape) for a single fit of ``model`` to ``rows`` (padded) rows, or None where
    the formula's own compiled program serves: not a formula, a formula too long for the
    largest bucket, a fit whose rows x (parameters + 1) x instructions (the work of one
    Jacobian) exceed ``MAX_WORK``, or a grouped fit (``--group-by``: its cost grows with the
    groups while a compile does not, and the local and Dask engines, which cut the groups
    differently, must run the same program to give the same bits).

    The interpreter makes one pass over the rows per instruction where the compiled formula
    makes one fused pass, so it costs several times as much per row; below MAX_WORK that
    stays under the cost of compiling a new formula (``benchmarks/tape.py`` measures both).

    The parameters are padded to their bucket (``nlfit.models.padded``): the static model is a
    ``Padded`` runner, so formulas of two, three or four parameters share one program."""
    from nlfit.models.expression import FormulaModel

    if not isinstance(model, FormulaModel) or grouped:
        return None
    n = len(model.param_names)
    size = padded_count(n)
    tape = None if size is None else model_tape(model, size)
    if tape is None or rows * (tape.n_params + 1) * tape.used > MAX_WORK:
        return None
    runner = Runner(tape.n_params, tape.n_columns, tape.length)
    return Padded(runner, tuple(range(n)), (0.0,) * size, model), tape


_TAPES: dict = {}


def model_tape(model, n_params: int | None = None) -> Tape | None:
    """``compile_tape`` of ``model``, kept per model and register count (the model's equality
    covers the text, the parameters' order and the columns: two models that differ in any
    never share a tape)."""
    if (model, n_params) not in _TAPES:
        _TAPES[(model, n_params)] = compile_tape(model, n_params)
    return _TAPES[(model, n_params)]


def _branches():
    """One function (a, b, c) per operation. ``lax.switch`` runs only the one the tape names,
    since the tape is never batched (``nlfit.problem.vmap_groups``): an operation not taken
    costs nothing and gives no derivative (no 0 * inf in reverse mode)."""
    from nlfit._jax import jax, jnp

    def unary(function):
        return lambda a, b, c: function(a)

    table = {
        "copy": lambda a, b, c: a,
        "const": lambda a, b, c: jnp.broadcast_to(c, a.shape),
        "add": lambda a, b, c: a + b,
        "sub": lambda a, b, c: a - b,
        "mul": lambda a, b, c: a * b,
        "div": lambda a, b, c: a / b,
        "pow": lambda a, b, c: jnp.power(a, b),
        "pow_data": lambda a, b, c: jnp.power(a, jax.lax.stop_gradient(b)),  # an exponent free of parameters
        "pow_data_base": lambda a, b, c: jnp.power(jax.lax.stop_gradient(a), b),  # a base free of parameters
        "neg": lambda a, b, c: -a,
    }
    return [table[name] if name in table else unary(getattr(jnp, name)) for name in OPS]


_BRANCHES: list = []


def run(tape, params, x, n_params: int, n_columns: int):
    """Evaluate ``tape`` (``Tape.arrays``) at ``params`` (P,) and the rows of ``x``: the
    instructions free of parameters on the data alone (not differentiated), then the others."""
    from nlfit._jax import jax, jnp

    if not _BRANCHES:
        _BRANCHES.extend(_branches())
    ops, first, second, constants, data_ops, data_first = tape
    rows = x.shape[0]
    columns = (x[None, :] if x.ndim == 1 else jnp.swapaxes(x, 0, 1)).astype(params.dtype)
    base = n_params + n_columns
    steps = jnp.arange(ops.shape[0])

    def interpret(registers, codes, a_registers):
        def step(registers, instruction):
            i, op, a, b, c = instruction
            value = jax.lax.switch(op, _BRANCHES, registers[a], registers[b], c)
            return jax.lax.dynamic_update_index_in_dim(registers, value, base + i, 0), None

        return jax.lax.scan(step, registers, (steps, codes, a_registers, second, constants))[0]

    empty = jnp.zeros((ops.shape[0], rows), params.dtype)
    data = interpret(jnp.concatenate([jnp.zeros((n_params, rows), params.dtype), columns, empty]), data_ops, data_first)
    registers = jnp.concatenate([jnp.broadcast_to(params[:, None], (n_params, rows)), columns, jax.lax.stop_gradient(data[base:])])
    return interpret(registers, ops, first)[-1]
