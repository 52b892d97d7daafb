"""User formulas as models, parsed safely and compiled to JAX.

``"b1*(1-exp(-b2*x))"`` or, for a transformed response, ``"log(y) = b1 - b2*x1*exp(-b3*x2)"``.

Safety: the text is parsed by Python's ``ast`` parser in expression mode (parsing executes
nothing) and every node is checked against a whitelist before anything is built:
numbers, names, + - * / ** (``^`` means power), unary +/-, parentheses and calls of the
functions below with positional arguments. Everything else (attribute access, subscripts,
strings, lambdas, comprehensions, comparisons, keyword arguments, names with double
underscores, any other call) is rejected with a message that points at its position. The
accepted tree is then turned into a tree of small Python closures over ``jax.numpy``; user
text never reaches ``eval``, ``exec`` or ``compile``.

Names: data columns are variables (whether or not ``--x`` lists them; ``choose_columns``);
``pi`` and ``e`` are constants; every other name is a parameter, in order of first
appearance. The left side of ``lhs = rhs`` is a
formula in the response column (and the predictors), without parameters: the fit is then
of lhs(y) against rhs.
"""

from __future__ import annotations

import ast
import functools
import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from nlfit.errors import FormulaError
from nlfit.models.base import Model

MAX_LENGTH = 10_000
MAX_DEPTH = 100

FUNCTIONS = {
    "exp": "exp", "log": "log", "log10": "log10", "sqrt": "sqrt",
    "sin": "sin", "cos": "cos", "tan": "tan",
    "arcsin": "arcsin", "arccos": "arccos", "arctan": "arctan",
    "asin": "arcsin", "acos": "arccos", "atan": "arctan",
    "sinh": "sinh", "cosh": "cosh", "tanh": "tanh", "abs": "abs",
    "voigt": "voigt",
}  # fmt: skip
# Functions of more than one argument, and how many they take. voigt(u, sigma, gamma) is the
# Voigt profile, a Gaussian of standard deviation sigma convolved with a Lorentzian of half
# width gamma, at u (unit area; scipy.special.voigt_profile): Re w((u + i gamma) / (sigma
# sqrt 2)) / (sigma sqrt(2 pi)), w the Faddeeva function (JAX's wofz, differentiable).
ARITY = {"voigt": 3}
CONSTANTS = {"pi": math.pi, "e": math.e}
_BINARY = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**"}
_REJECTED = {
    ast.Attribute: "attribute access ('.') is not allowed",
    ast.Subscript: "indexing ('[...]') is not allowed",
    ast.Lambda: "lambda is not allowed",
    ast.ListComp: "comprehensions are not allowed",
    ast.SetComp: "comprehensions are not allowed",
    ast.DictComp: "comprehensions are not allowed",
    ast.GeneratorExp: "comprehensions are not allowed",
    ast.Compare: "comparisons are not allowed",
    ast.BoolOp: "'and'/'or' are not allowed",
    ast.IfExp: "conditional expressions are not allowed",
    ast.NamedExpr: "':=' is not allowed",
    ast.JoinedStr: "strings are not allowed",
    ast.Starred: "'*' unpacking is not allowed",
    ast.Tuple: "tuples (a comma outside a function call) are not allowed",
    ast.List: "lists are not allowed",
    ast.Dict: "dicts are not allowed",
    ast.Set: "sets are not allowed",
    ast.Await: "await is not allowed",
    ast.Yield: "yield is not allowed",
    ast.YieldFrom: "yield is not allowed",
}


def _split_sides(text: str) -> tuple[str | None, str, int]:
    """'lhs = rhs' -> (lhs, rhs, offset of rhs); a formula without '=' -> (None, text, 0).

    Only a lone '=' outside parentheses separates the sides; '==', ':=', '<=' and the '=' of
    a keyword argument are left to the parser, which rejects them with their own message.
    """
    positions, depth = [], 0
    for i, ch in enumerate(text):
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch == "=" and depth == 0:
            before = text[i - 1] if i else ""
            after = text[i + 1] if i + 1 < len(text) else ""
            if before not in "=:<>!" and after != "=":
                positions.append(i)
    if not positions:
        return None, text, 0
    if len(positions) > 1:
        raise FormulaError("a formula may contain at most one '='", text, positions[1])
    i = positions[0]
    return text[:i], text[i + 1 :], i + 1


def _caret_to_power(text: str) -> tuple[str, list[int]]:
    """'^' means power with the precedence of '**' (Python's '^' binds looser than '+').

    Returns the rewritten text and, for every position in it, the position in ``text``.
    """
    out, origin = [], []
    for i, ch in enumerate(text):
        if ch == "^":
            out.append("**")
            origin += [i, i]
        else:
            out.append(ch)
            origin.append(i)
    origin.append(len(text))
    return "".join(out), origin


def _parse(text: str, full: str, offset: int) -> ast.expr:
    if not text.strip():
        raise FormulaError("empty formula", full, offset)
    lead = len(text) - len(text.lstrip())
    source, origin = _caret_to_power(text.strip().replace("\n", " "))

    def where(column: int) -> int:
        return offset + lead + origin[max(0, min(column, len(origin) - 1))]

    try:
        with warnings.catch_warnings():  # "invalid escape sequence" in a string the checks below refuse anyway
            warnings.simplefilter("ignore")
            tree = ast.parse(source, mode="eval")
    except SyntaxError as exc:
        raise FormulaError(f"invalid formula syntax ({exc.msg})", full, min(where((exc.offset or 1) - 1), len(full))) from None
    except (RecursionError, MemoryError, ValueError):
        raise FormulaError("formula is too deeply nested or too large", full) from None
    _check(tree.body, full, where, 0)
    return tree.body


def _check(node: ast.AST, full: str, where, depth: int) -> None:
    position = where(getattr(node, "col_offset", 0))
    if depth > MAX_DEPTH:
        raise FormulaError(f"formula is nested more than {MAX_DEPTH} levels deep", full, position)
    for kind, message in _REJECTED.items():
        if isinstance(node, kind):
            raise FormulaError(message, full, position)
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            what = "strings" if isinstance(node.value, (str, bytes)) else f"the constant {node.value!r}"
            raise FormulaError(f"{what} are not allowed; only numbers", full, position)
        try:
            finite = math.isfinite(float(node.value))
        except OverflowError:
            finite = False
        if not finite:
            what = f"the number {node.value}" if isinstance(node.value, float) else f"a {len(str(node.value))}-digit integer"
            raise FormulaError(f"{what} is beyond the range of a float (about 1.8e308)", full, position)
        return
    if isinstance(node, ast.Name):
        if node.id.startswith("__") or node.id.startswith("_"):
            raise FormulaError(f"name '{node.id}' is not allowed (names may not start with '_')", full, position)
        if node.id in FUNCTIONS:
            raise FormulaError(f"'{node.id}' is a function; call it as {node.id}(...)", full, position)
        return
    if isinstance(node, ast.BinOp):
        if type(node.op) not in _BINARY:
            raise FormulaError("only the operators + - * / ** ^ are allowed", full, position)
        _check(node.left, full, where, depth + 1)
        _check(node.right, full, where, depth + 1)
        return
    if isinstance(node, ast.UnaryOp):
        if not isinstance(node.op, (ast.USub, ast.UAdd)):
            raise FormulaError("only unary + and - are allowed", full, position)
        _check(node.operand, full, where, depth + 1)
        return
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name):
            _check(node.func, full, where, depth + 1)
            raise FormulaError("only calls of the listed functions are allowed", full, position)
        name = node.func.id
        if name not in FUNCTIONS:
            allowed = ", ".join(sorted(set(FUNCTIONS)))
            raise FormulaError(f"unknown function '{name}'; allowed: {allowed}", full, position)
        if node.keywords:
            raise FormulaError(f"{name}() takes no keyword arguments", full, position)
        arity = ARITY.get(name, 1)
        if len(node.args) != arity:
            raise FormulaError(f"{name}() takes exactly {'one argument' if arity == 1 else f'{arity} arguments'}", full, position)
        for argument in node.args:
            _check(argument, full, where, depth + 1)
        return
    raise FormulaError(f"'{type(node).__name__}' is not allowed in a formula", full, position)


def _names_in_order(node: ast.AST) -> list[str]:
    functions = {id(n.func) for n in ast.walk(node) if isinstance(n, ast.Call)}
    found = [n for n in ast.walk(node) if isinstance(n, ast.Name) and id(n) not in functions]
    found.sort(key=lambda n: (n.lineno, n.col_offset))
    return list(dict.fromkeys(n.id for n in found))


def formula_names(text: str) -> tuple[list[str], list[str]]:
    """The names a formula uses, in order of first appearance: (right side, left side), function
    names left out. ``pi`` and ``e`` are among them: they are constants only where no data
    column has that name. Raises FormulaError as ``parse`` does."""
    if len(text) > MAX_LENGTH:
        raise FormulaError(f"formula is longer than {MAX_LENGTH} characters")
    lhs_text, rhs_text, offset = _split_sides(text)
    rhs = _names_in_order(_parse(rhs_text, text, offset))
    lhs = [] if lhs_text is None else _names_in_order(_parse(lhs_text, text, 0))
    return rhs, lhs


def choose_columns(text: str, columns: list[str], x_columns: list[str] | None, y_column: str | None, reserved=()) -> tuple[list[str], str]:
    """(x columns, y column) of a formula fit: every data column the formula names is a
    variable (a predictor), whether or not ``--x`` lists it; everything else is a parameter.

    ``columns``: the file's columns; ``reserved``: columns that are neither (sigma, group).
    The response is ``--y``, else the column on the formula's left side, else 'y', else the
    first column the formula does not use. An ``--x`` column that the formula does not use,
    or a formula that uses no column at all, is an error that names them."""
    rhs, lhs = formula_names(text)
    available = [c for c in columns if c not in reserved]
    if y_column is None:
        on_left = [n for n in lhs if n in available]
        if lhs and len(on_left) == 1:
            y_column = on_left[0]
        elif lhs and y_column is None:
            y_column = next((n for n in on_left if n not in rhs), on_left[0] if on_left else None)
        if y_column is None:
            y_column = "y" if "y" in available and "y" not in rhs else next((c for c in available if c not in rhs), None)
        if y_column is None:
            raise FormulaError("the formula uses every column; give the response column with --y")
    elif lhs and y_column not in lhs:
        raise FormulaError(f"--y column '{y_column}' is not the response on the formula's left side ({', '.join(lhs) or 'none'})")
    used = [c for c in available if c in rhs and c != y_column]
    if x_columns:
        unused = [c for c in x_columns if c not in rhs and c not in lhs]
        if unused:
            raise FormulaError(
                f"--x column{'s' if len(unused) > 1 else ''} {', '.join(repr(c) for c in unused)} "
                f"{'are' if len(unused) > 1 else 'is'} not used by the formula (its names: {', '.join(n for n in rhs if n not in CONSTANTS)})"
            )
        return list(x_columns) + [c for c in used if c not in x_columns], y_column
    if not used:
        names = ", ".join(n for n in rhs if n not in CONSTANTS)
        raise FormulaError(
            f"the formula uses none of the data columns: every name in it ({names}) would be a parameter; write the predictor as its column is named"
        )
    return used, y_column


_CONSTANT, _AFFINE, _NONLINEAR = 0, 1, 2


def _degree(node: ast.expr, chosen: set[str]) -> int:
    """How the expression depends on the parameters in ``chosen``: not at all (_CONSTANT),
    as an affine function (_AFFINE: sum of chosen parameters times factors free of them, plus
    a term free of them) or otherwise (_NONLINEAR). Names outside ``chosen`` are constants."""
    if isinstance(node, ast.Constant):
        return _CONSTANT
    if isinstance(node, ast.Name):
        return _AFFINE if node.id in chosen else _CONSTANT
    if isinstance(node, ast.UnaryOp):
        return _degree(node.operand, chosen)
    if isinstance(node, ast.Call):
        return _CONSTANT if all(_degree(argument, chosen) == _CONSTANT for argument in node.args) else _NONLINEAR
    left, right = _degree(node.left, chosen), _degree(node.right, chosen)
    symbol = _BINARY[type(node.op)]
    if symbol in ("+", "-"):
        return max(left, right)
    if symbol == "*":
        return left + right if left + right <= _AFFINE else _NONLINEAR
    if symbol == "/":
        return left if right == _CONSTANT else _NONLINEAR
    return _CONSTANT if left == right == _CONSTANT else _NONLINEAR


def _build(node: ast.expr, lookup, xp):
    """The accepted tree -> a closure evaluate(params, columns) over the array module ``xp``
    (jax.numpy for fitting, numpy for ``nlfit generate``, which must not import JAX)."""
    jnp = xp

    if isinstance(node, ast.Constant):
        value = float(node.value)
        return lambda params, columns: value
    if isinstance(node, ast.Name):
        kind, key = lookup(node.id)
        if kind == "param":
            return lambda params, columns: params[key]
        if kind == "column":
            return lambda params, columns: columns[key]
        return lambda params, columns: key  # a constant
    if isinstance(node, ast.UnaryOp):
        operand = _build(node.operand, lookup, xp)
        if isinstance(node.op, ast.USub):
            return lambda params, columns: -operand(params, columns)
        return operand
    if isinstance(node, ast.BinOp):
        left, right = _build(node.left, lookup, xp), _build(node.right, lookup, xp)
        symbol = _BINARY[type(node.op)]
        if symbol == "+":
            return lambda p, c: left(p, c) + right(p, c)
        if symbol == "-":
            return lambda p, c: left(p, c) - right(p, c)
        if symbol == "*":
            return lambda p, c: left(p, c) * right(p, c)
        if symbol == "/":
            return lambda p, c: left(p, c) / right(p, c)
        return lambda p, c: jnp.power(left(p, c), right(p, c))
    if isinstance(node, ast.Call) and node.func.id in ARITY:
        function = _voigt_numpy if xp is np else _voigt_jax
        arguments = [_build(argument, lookup, xp) for argument in node.args]
        return lambda p, c: function(*(argument(p, c) for argument in arguments))
    if isinstance(node, ast.Call):
        function = getattr(jnp, FUNCTIONS[node.func.id])
        argument = _build(node.args[0], lookup, xp)
        return lambda p, c: function(argument(p, c))
    raise FormulaError(f"cannot build '{type(node).__name__}'")  # unreachable after _check


def _voigt_jax(u, sigma, gamma):
    from nlfit._jax import jax, jnp  # nlfit._jax first: it sets up JAX (float64)

    wofz = jax.scipy.special.wofz

    scale = sigma * math.sqrt(2.0)
    return jnp.real(wofz((u + 1j * gamma) / scale)) / (scale * math.sqrt(math.pi))


def _voigt_numpy(u, sigma, gamma):
    from scipy.special import voigt_profile

    return voigt_profile(np.asarray(u, dtype=np.float64), np.asarray(sigma, dtype=np.float64), np.asarray(gamma, dtype=np.float64))


@dataclass(frozen=True)
class FormulaModel(Model):
    spec: str
    x_names: tuple[str, ...]
    y_name: str
    parameter_names: tuple[str, ...]
    rhs: ast.expr = field(compare=False, hash=False, repr=False)
    lhs: ast.expr | None = field(compare=False, hash=False, repr=False)

    @classmethod
    def parse(cls, text: str, x_names=("x",), y_name: str = "y", order=None, require_params: bool = True) -> FormulaModel:
        """Parse ``text``. ``order`` (e.g. a NIST file's b1..bN) overrides the order of first
        appearance when it names exactly the formula's parameters."""
        if len(text) > MAX_LENGTH:
            raise FormulaError(f"formula is longer than {MAX_LENGTH} characters")
        lhs_text, rhs_text, offset = _split_sides(text)
        rhs = _parse(rhs_text, text, offset)
        lhs = None
        if lhs_text is not None:
            lhs = _parse(lhs_text, text, 0)
            allowed = {y_name, *x_names, *CONSTANTS}
            for name in _names_in_order(lhs):
                if name not in allowed:
                    column = text.find(name)
                    raise FormulaError(
                        f"the left side may use only the response column '{y_name}' and predictors; '{name}' is neither",
                        text,
                        column,
                    )
            if isinstance(lhs, ast.Name) and lhs.id == y_name:
                lhs = None  # 'y = ...' is the plain model
        if y_name in _names_in_order(rhs) and y_name not in x_names:
            raise FormulaError(f"the response column '{y_name}' cannot appear on the right side", text, text.find(y_name, offset))
        parameters = tuple(n for n in _names_in_order(rhs) if n not in x_names and n not in CONSTANTS)
        if not parameters and require_params:
            raise FormulaError("the formula has no parameters to fit", text)
        if order is not None and set(order) == set(parameters):
            parameters = tuple(order)
        return cls(spec=text.strip(), x_names=tuple(x_names), y_name=y_name, parameter_names=parameters, rhs=rhs, lhs=lhs)

    @property
    def param_names(self) -> tuple[str, ...]:
        return self.parameter_names

    def _lookup(self, name: str):
        if name in self.x_names:
            return "column", name
        if name == self.y_name:
            return "column", name
        if name in self.parameter_names:
            return "param", self.parameter_names.index(name)
        return "constant", CONSTANTS[name]

    def _columns(self, x):
        if len(self.x_names) == 1:
            return {self.x_names[0]: x}
        return {name: x[..., i] for i, name in enumerate(self.x_names)}

    def predict(self, params, x):
        from nlfit._jax import jnp

        evaluate = _compiled(self, "rhs")
        value = evaluate(params, self._columns(x))
        return jnp.broadcast_to(value, jnp.shape(x)[:1])

    @property
    def linear_params(self) -> tuple[bool, ...]:
        """A largest set of parameters (greedy, in order) in which the formula is jointly
        affine: given the others, their best values solve a linear least-squares problem."""
        chosen: set[str] = set()
        for name in self.parameter_names:
            if _degree(self.rhs, chosen | {name}) <= _AFFINE:
                chosen.add(name)
        return tuple(name in chosen for name in self.parameter_names)

    def denominators(self, params, x):
        """Every divisor in the formula, and every base raised to a negative constant power."""
        evaluate = _compiled(self, "denominators")
        columns = self._columns(x)
        from nlfit._jax import jnp

        return [jnp.broadcast_to(f(params, columns), jnp.shape(x)[:1]) for f in evaluate]

    def values_on_grids(self, params, grids):
        """The values (N, W) and denominators (N, D, W) at N parameter vectors (N, n), each on
        its own grid of one predictor (N, W), with numpy: no compiled program per formula."""
        columns = {self.x_names[0]: np.asarray(grids, dtype=np.float64)}
        stacked = np.asarray(params, dtype=np.float64).T[:, :, None]  # params[k] is then (N, 1)
        shape = np.shape(grids)
        with np.errstate(all="ignore"):
            values = np.broadcast_to(_compiled(self, "rhs", np)(stacked, columns), shape)
            found = [np.broadcast_to(f(stacked, columns), shape) for f in _compiled(self, "denominators", np)]
        return np.array(values, dtype=np.float64), np.stack(found, axis=1) if found else np.zeros((shape[0], 0, shape[1]))

    @property
    def frequencies(self) -> tuple[tuple[int, float], ...]:
        """(parameter index, k) for each sin(...)/cos(...) whose argument has a term
        k * b * x (b a parameter, k a product of numbers; one predictor): b * k is an angular
        frequency, so the data's spectrum gives its starts (``nlfit.start.guided_starts``)."""
        if len(self.x_names) != 1:
            return ()
        found = []
        for node in ast.walk(self.rhs):
            if isinstance(node, ast.Call) and node.func.id in ("sin", "cos"):
                for term in _terms(node.args[0]):
                    found += self._scaled_product(term)
        return tuple(dict.fromkeys(found))

    @property
    def poles(self) -> tuple[tuple[int, float], ...]:
        """(parameter index, sign) for each divisor of the form x - b, b - x or x + b (or a
        constant power of one): the model has a pole at x = sign * b."""
        if len(self.x_names) != 1:
            return ()
        found = []
        for node in _divisors(self.rhs):
            while isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow) and isinstance(node.right, (ast.Constant, ast.UnaryOp)):
                node = node.left
            if not (isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub))):
                continue
            names = [side.id if isinstance(side, ast.Name) else None for side in (node.left, node.right)]
            if self.x_names[0] in names and any(n in self.parameter_names for n in names):
                parameter = next(n for n in names if n in self.parameter_names)
                found.append((self.parameter_names.index(parameter), -1.0 if isinstance(node.op, ast.Add) else 1.0))
        return tuple(dict.fromkeys(found))

    def _scaled_product(self, node) -> list[tuple[int, float]]:
        """[(index of b, k)] when ``node`` is a product k * b * x in any order, else []."""
        factors, stack, k = [], [node], 1.0
        while stack:
            item = stack.pop()
            if isinstance(item, ast.BinOp) and isinstance(item.op, ast.Mult):
                stack += [item.left, item.right]
            elif isinstance(item, ast.UnaryOp):
                k = -k if isinstance(item.op, ast.USub) else k
                stack.append(item.operand)
            elif isinstance(item, ast.Constant):
                k *= float(item.value)
            else:
                factors.append(item)
        names = [f.id for f in factors if isinstance(f, ast.Name)]
        params = [n for n in names if n in self.parameter_names]
        others = [n for n in names if n not in params and n != self.x_names[0]]
        if len(names) != len(factors) or len(params) != 1 or names.count(self.x_names[0]) != 1 or not all(n in CONSTANTS for n in others):
            return []
        k *= math.prod(CONSTANTS[n] for n in others)
        return [(self.parameter_names.index(params[0]), k)] if k != 0 else []

    def default_p0(self, x, y):
        """gnuplot's convention: every parameter not given starts at 1."""
        return np.ones(len(self.parameter_names))

    def default_p0_groups(self, x, y, real):
        if type(self).default_p0 is not FormulaModel.default_p0:  # a subclass with a start of its own (a named model's rule)
            return None
        return np.ones((len(y), len(self.parameter_names)))

    def long_double_values(self):
        return functools.partial(evaluate_numpy, self, dtype=np.longdouble)

    @property
    def fits_response_as_given(self) -> bool:
        return self.lhs is None

    def transform_response(self, y, x):
        if self.lhs is None:
            return y
        columns = {**self._columns(np.asarray(x)), self.y_name: np.asarray(y)}
        with np.errstate(all="ignore"):
            return np.asarray(_compiled(self, "lhs", np)(None, columns), dtype=np.float64) * np.ones_like(y)

    def to_json(self) -> dict:
        return {"spec": self.spec, "x": list(self.x_names), "y": self.y_name, "params": list(self.parameter_names)}


# Built evaluators, keyed by the model itself: its equality covers everything that changes an
# evaluation (the text, the parameters' order, the variables' names and order, the response),
# so two models that differ in any of these never share one.
_CACHE: dict = {}


def _compiled(model: FormulaModel, side: str, xp=None):
    if xp is None:
        from nlfit._jax import jnp as xp
    key = (model, side, xp.__name__)
    if key not in _CACHE:
        if side == "denominators":
            _CACHE[key] = [_build(node, model._lookup, xp) for node in _divisors(model.rhs)]
        else:
            _CACHE[key] = _build(getattr(model, side), model._lookup, xp)
    return _CACHE[key]


def _terms(node: ast.expr) -> list[ast.expr]:
    """The terms of a sum (signs dropped): a + b - c -> [a, b, c]."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)):
        return _terms(node.left) + _terms(node.right)
    if isinstance(node, ast.UnaryOp):
        return _terms(node.operand)
    return [node]


def _divisors(tree: ast.expr) -> list[ast.expr]:
    """The right operands of '/' and the bases of negative constant powers, where they depend
    on a name (a divisor made of numbers alone cannot change sign)."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.BinOp):
            continue
        if isinstance(node.op, ast.Div):
            found.append(node.right)
        elif isinstance(node.op, ast.Pow):
            exponent = node.right
            negative = isinstance(exponent, ast.UnaryOp) and isinstance(exponent.op, ast.USub) and isinstance(exponent.operand, ast.Constant)
            if negative or (isinstance(exponent, ast.Constant) and float(exponent.value) < 0):
                found.append(node.left)
    return [node for node in found if any(isinstance(n, ast.Name) for n in ast.walk(node))]


def evaluate_numpy(model: FormulaModel, params, x, dtype=np.float64) -> np.ndarray:
    """The right side with numpy (no JAX): for generating data, and in ``dtype=np.longdouble``
    for the extended-precision refinement of a fit (``nlfit.refine``)."""
    with np.errstate(all="ignore"):
        value = _compiled(model, "rhs", np)(np.asarray(params, dtype=dtype), model._columns(np.asarray(x, dtype=dtype)))
    return np.broadcast_to(np.asarray(value, dtype=dtype), np.shape(x)[:1]).copy()
