"""Human-readable report of a fit, printed with rich to stderr.

The loss history (shortened for long runs to the first rows, every k-th row and the last
rows), a sparkline of log10(loss), the parameter table, the correlation matrix of up to
CORRELATION_MATRIX_MAX parameters, the status line, and the goodness of fit as R's
``summary(nls)`` and gnuplot's ``fit`` print it: the residual standard error on its degrees
of freedom, R² and adjusted R², AIC and BIC (``nlfit.stats``: R's ``AIC(nls)``), and the
points used and dropped. Colour follows rich's rules: none when stderr is not a terminal or
NO_COLOR is set.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from nlfit.errors import printable

if TYPE_CHECKING:  # rich is imported where a table or console is made (plain_table, stderr_console)
    from rich.console import Console
    from rich.table import Table

SPARK_CHARS = "▁▂▃▄▅▆▇█"
CORRELATION_MATRIX_MAX = 6  # the report shows the correlation matrix of at most this many estimated parameters


def stderr_console() -> Console:
    """rich on stderr; when it is not a terminal, wide enough that tables are not squeezed."""
    from rich.console import Console

    console = Console(stderr=True, highlight=False)
    if not console.is_terminal:
        console = Console(stderr=True, highlight=False, width=140)
    return console


def plain_table(title: str | None = None) -> Table:
    """The reports' rich table: no outer edge or padding, the title on the left. rich is
    imported here, not at the top: a quiet fit makes no table and imports none of it."""
    from rich.table import Table

    if title is None:
        return Table(show_edge=False, pad_edge=False)
    return Table(title=title, title_justify="left", show_edge=False, pad_edge=False)


def log_range(series) -> tuple[float, float] | None:
    """The (min, max) of log10 over several loss series, for sparklines on one scale."""
    logs = [math.log10(v) for values in series for v in values if v is not None and v > 0 and math.isfinite(v)]
    return (min(logs), max(logs)) if logs else None


def sparkline(values, width: int = 60, scale: tuple[float, float] | None = None) -> str:
    """log10 of positive values as a row of block characters (resampled to ``width``).

    ``scale`` = (lo, hi) in log10 puts several sparklines on one scale.
    """
    logs = [math.log10(v) for v in values if v is not None and v > 0 and math.isfinite(v)]
    if not logs:
        return ""
    if len(logs) > width:
        logs = [logs[round(i * (len(logs) - 1) / (width - 1))] for i in range(width)]
    lo, hi = scale if scale is not None else (min(logs), max(logs))
    span = hi - lo or 1.0
    return "".join(SPARK_CHARS[min(len(SPARK_CHARS) - 1, int((v - lo) / span * (len(SPARK_CHARS) - 1) + 0.5))] for v in logs)


def shortened(rows: list, head: int = 6, tail: int = 6, middle: int = 8) -> list:
    """The first ``head`` rows, about ``middle`` evenly spaced rows, and the last ``tail`` rows."""
    if len(rows) <= head + tail + middle:
        return rows
    inner = rows[head:-tail]
    every = max(1, math.ceil(len(inner) / middle))
    return rows[:head] + inner[every - 1 :: every] + rows[-tail:]


def _num(value, spec=".6g") -> str:
    return "" if value is None else format(value, spec)


def history_table(history: list[dict]) -> Table:
    table = plain_table("loss history")
    has = {key: any(row.get(key) is not None for row in history) for key in ("damping", "radius", "step_length")}
    table.add_column("iter", justify="right")
    table.add_column("loss", justify="right")
    table.add_column("‖grad‖", justify="right")
    table.add_column("‖step‖", justify="right")
    for key, label in (("damping", "damping"), ("radius", "radius"), ("step_length", "step len")):
        if has[key]:
            table.add_column(label, justify="right")
    table.add_column("ok", justify="center")
    previous = None
    for row in shortened(history):
        if previous is not None and row["iteration"] != previous + 1:
            table.add_row("⋮", *[""] * (len(table.columns) - 1))
        cells = [
            str(row["iteration"]),
            _num(row["loss"], ".10g"),
            _num(row["grad_norm"], ".3e"),
            _num(row["step_norm"], ".3e"),
        ]
        cells += [_num(row[key], ".3e") for key in ("damping", "radius", "step_length") if has[key]]
        cells.append("✓" if row["accepted"] else "✗")
        table.add_row(*cells)
        previous = row["iteration"]
    return table


def params_table(result_json: dict, title: str = "parameters") -> Table:
    level = result_json.get("stats", {}).get("conf_level")
    interval = f"{100 * level:g}% interval" if level else "interval"
    table = plain_table(title)
    for column in ("name", "value", "± stderr", interval, "rel. err"):
        table.add_column(column, justify="left" if column == "name" else "right")
    for name, entry in result_json["params"].items():
        value, stderr, ci = entry["value"], entry.get("stderr"), entry.get("ci")
        relative = "" if stderr is None or not value else f"{100 * abs(stderr / value):.3g} %"
        bounds = "" if not ci else "[" + ", ".join("open" if end is None else f"{end:.6g}" for end in ci) + "]"  # an open side of a profile interval
        if entry.get("fixed"):
            spread = "fixed"
        elif entry.get("at_bound"):
            spread = f"at {entry['at_bound']} bound"
        else:
            spread = "" if stderr is None else f"± {stderr:.4g}"
        table.add_row(name, _num(value, ".10g"), spread, bounds, relative)
    return table


def method_title(result_json: dict) -> str:
    """'parameters: lm × trust-region': the title of one method's table in a comparison."""
    return f"parameters: {result_json.get('method', '?')} × {result_json.get('globalization', '?')}"


def correlation_table(result_json: dict) -> Table | None:
    """The lower triangle of the correlation matrix of the estimated parameters (R's
    ``summary(nls, correlation = TRUE)``, gnuplot's 'correlation matrix of the fit
    parameters'), for 2 to CORRELATION_MATRIX_MAX of them; None otherwise. Entries above the
    threshold of the 'strongly correlated' warning (``nlfit.stats``) are highlighted; the
    warning itself is printed once, with the other warnings."""
    from nlfit.stats import CORRELATION_WARNING

    matrix = result_json.get("correlation")
    if not matrix:
        return None
    names = list(result_json["params"])
    keep = [i for i in range(len(names)) if matrix[i][i] is not None]  # held parameters have none
    if not 2 <= len(keep) <= CORRELATION_MATRIX_MAX:
        return None
    table = plain_table()  # titled by print_report: a title would wrap over two narrow columns
    table.add_column("")
    for j in keep[:-1]:
        table.add_column(names[j], justify="right")
    for row, i in enumerate(keep[1:], start=1):
        cells = []
        for j in keep[:row]:
            rho = matrix[i][j]
            text = "" if rho is None else f"{rho:.4f}"
            cells.append(f"[bold yellow]{text}[/bold yellow]" if rho is not None and abs(rho) > CORRELATION_WARNING else text)
        table.add_row(names[i], *cells, *[""] * (len(keep) - 1 - row))
    return table


def goodness_lines(result_json: dict) -> list[str]:
    """The goodness of fit in words, as R's ``summary(nls)`` and gnuplot's ``fit`` print it:

    Residual standard error: 0.4823 on 197 degrees of freedom
    R² 0.288   adjusted R² 0.2807
    AIC 280.85   BIC 294.04   log-likelihood -136.43   (k = 4: 3 parameters and the variance)
    points: 200 used, 0 dropped (missing values)

    With --sigma a chi² line (gnuplot's WSSR/ndf) follows the first. Values come from the
    payload's ``stats`` (``nlfit.stats``); what is missing there is left out or computed from
    rss, n and dof. ``data.dropped`` and ``data.files`` are read when present."""
    stats = result_json.get("stats") or {}
    data = result_json.get("data") or {}
    n, dof, rss = stats.get("n"), stats.get("dof"), stats.get("rss")
    lines = []
    sigma = stats.get("sigma")
    if sigma is None and rss is not None and dof:
        sigma = math.sqrt(rss / dof) if dof > 0 else None
    if dof is not None:
        if sigma is not None:
            lines.append(f"Residual standard error: {sigma:.4g} on {dof} degrees of freedom")
        else:
            lines.append(f"Residual standard error: not defined ({dof} degrees of freedom)")
    if stats.get("chi2") is not None:
        reduced = stats.get("reduced_chi2")
        lines.append(f"chi² {stats['chi2']:.6g} on {dof} degrees of freedom" + ("" if reduced is None else f", reduced chi² {reduced:.4g}"))
    fit = [f"{label} {_fraction(stats[key])}" for key, label in (("r2", "R²"), ("r2_adj", "adjusted R²")) if stats.get(key) is not None]
    if fit:
        lines.append("   ".join(fit))
    information = [f"{label} {stats[key]:.2f}" for key, label in (("aic", "AIC"), ("bic", "BIC"), ("loglik", "log-likelihood")) if stats.get(key) is not None]
    if information:
        counted = ""
        if n is not None and dof is not None:
            p = n - dof  # the estimated parameters (fixed ones and ones held at a bound are not)
            plural = "s" if p != 1 else ""
            if result_json.get("absolute_sigma"):
                counted = f"   (k = {p} parameter{plural}; the variance is known: --absolute-sigma)"
            else:
                counted = f"   (k = {p + 1}: {p} parameter{plural} and the variance)"
        lines.append("   ".join(information) + counted)
    loss = result_json.get("loss")
    if loss not in (None, "linear") and (fit or information):
        lines.append(f"(the fit minimized the {loss} loss; R², AIC and BIC are those of least squares at its parameters)")
    if n is not None:
        dropped = data.get("dropped") or 0
        text = f"points: {n} used, {dropped} dropped (missing values)"
        files = [printable(f) for f in data.get("files") or ()]  # a file name may hold terminal escapes
        if len(files) > 3:
            text += f" from {len(files)} files: {files[0]}, {files[1]}, …, {files[-1]}"
        elif files:
            text += f" from {', '.join(files)}"
        lines.append(text)
    return lines


def _fraction(value: float) -> str:
    """R² to 4 significant digits, with more where those would round a value below 1 up to 1."""
    digits = 4
    while digits < 15 and value < 1 and float(f"{value:.{digits}g}") >= 1:
        digits += 1
    return f"{value:.{digits}g}"


def print_report(result_json: dict, console: Console, show_params: bool = True) -> None:
    history = result_json["history"]
    console.print(
        f"[bold]{result_json['model']}[/bold]  method {result_json['method']} × {result_json['globalization']}"
        f"  jac {result_json['jac']}  n {result_json['stats']['n']}"
    )
    console.print(history_table(history))
    spark = sparkline([row["loss"] for row in history])
    if spark:
        console.print(f"log10(loss) {spark}")
    if show_params:
        console.print(params_table(result_json))
    correlation = correlation_table(result_json)
    if correlation is not None:
        console.print("correlation of parameter estimates")
        console.print(correlation)
    counts = result_json["counts"]
    style = "green" if result_json["success"] else "yellow"
    console.print(
        f"[{style}]{result_json['status']}[/{style}]: {result_json['message']}\n"
        f"iterations {counts['iterations']}  nfev {counts['nfev']}  njev {counts['njev']}  "
        f"rss {_num(result_json['stats']['rss'], '.10g') or 'not finite'}  time {result_json['seconds']:.3f} s"
    )
    for line in goodness_lines(result_json):
        console.print(line, markup=False)
    variables = [printable(v) for v in result_json.get("data", {}).get("x") or []]  # column names come from the file
    console.print(f"variables (data columns): {', '.join(variables)}   parameters: {', '.join(result_json['params'])}", markup=False)
    starts = result_json.get("starts")
    if starts:
        screened = f" on {starts['screened_rows']} rows" if starts.get("screened_rows") else ""
        aside = f", {starts['set_aside']} set aside after a few iterations" if starts.get("set_aside") else ""
        console.print(
            f"starts: {starts['tried']} tried{screened}, {starts['converged']} converged{aside}, {len(starts['minima'])} distinct minima; "
            f"chosen: start {starts['chosen']} ({starts['chosen_start']})"
        )


def significant(value: float, digits: int = 2) -> str:
    """``value`` to ``digits`` significant digits, without an exponent and without trailing
    zeros: 0.05, 2.4, 24, 310; integer digits beyond ``digits`` are kept (31234 -> '31234')."""
    if value == 0 or not math.isfinite(value):
        return format(value, "g")
    magnitude = math.floor(math.log10(abs(value)))
    decimals = max(0, digits - 1 - magnitude)
    text = f"{value:.{decimals}f}"
    if decimals and math.floor(math.log10(abs(float(text)))) > magnitude:  # 9.96 -> '10.0': one digit too many
        text = f"{value:.{decimals - 1}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def duration_text(seconds: float) -> str:
    """A time to 3 significant digits in a unit that fits: '87.3 µs', '12.5 ms', '2.41 s'."""
    if not math.isfinite(seconds) or seconds < 0:
        return "? s"
    if seconds == 0:
        return "0 s"
    seconds = float(f"{seconds:.3g}")  # rounded first, so 0.9996 s is '1 s', not '1000 ms'
    if seconds < 1e-3:
        return f"{significant(seconds * 1e6, 3)} µs"
    if seconds < 1:
        return f"{significant(seconds * 1e3, 3)} ms"
    return f"{significant(seconds, 3)} s"


def rate_text(count: int, seconds: float) -> str:
    """Fits per second to 2 significant digits ('2.4 fits/s', '30000 fits/s'); below one fit
    a second, seconds per fit ('20 s per fit'). Never '0 fits/s'."""
    if count <= 0:
        return "no fits"
    if not math.isfinite(seconds) or seconds <= 0:
        return "too fast to time"
    rate = count / seconds
    if rate >= 1:
        return f"{significant(rate)} fits/s"
    return f"{significant(seconds / count)} s per fit"


def batch_summary(count: int, failed: int, method: str, globalization: str, seconds: float) -> str:
    """The line after a grouped fit: '3 groups, 3 converged, 0 not  (lm × trust-region, 412 ms, 7.3 fits/s)'."""
    return f"{count} groups, {count - failed} converged, {failed} not  ({method} × {globalization}, {duration_text(seconds)}, {rate_text(count, seconds)})"


def plain_line(text: str) -> None:
    """One line on stderr, as it is (no markup, no wrapping)."""
    import sys

    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def comparison_table(payloads: list[dict]) -> Table:
    """Methods side by side: iterations, evaluations, final loss, time, status, loss sparkline."""
    table = plain_table("method comparison")
    for column in ("method", "globalization", "iter", "nfev", "njev", "final loss", "time s", "status", "log10(loss), one scale"):
        table.add_column(column, justify="right" if column in ("iter", "nfev", "njev", "final loss", "time s") else "left")
    scale = log_range([[row["loss"] for row in p["history"]] for p in payloads])
    for p in payloads:
        counts = p["counts"]
        table.add_row(
            p["method"],
            p["globalization"],
            str(counts["iterations"]),
            str(counts["nfev"]),
            str(counts["njev"]),
            _num(p["stats"]["loss"], ".10g"),
            f"{p['seconds']:.3f}",
            p["status"],
            sparkline([row["loss"] for row in p["history"]], width=40, scale=scale),
        )
    return table


class ProgressLine:
    """A live 'iter, loss, |g|' line on stderr for fits that run longer than ``delay`` seconds.

    Only when stderr is a terminal; it disappears when the fit ends (the report follows).
    """

    def __init__(self, console: Console, delay: float = 0.5):
        import time

        self._console = console
        self._delay = delay
        self._clock = time.perf_counter
        self._started = self._clock()
        self._live = None

    def __call__(self, row: dict) -> None:
        if not self._console.is_terminal:
            return
        if self._live is None:
            if self._clock() - self._started < self._delay:
                return
            from rich.live import Live

            self._live = Live(console=self._console, transient=True, refresh_per_second=10)
            self._live.start()
        self._live.update(f"iter {row['iteration']}  loss {row['loss']:.10g}  ‖g‖ {row['grad_norm']:.3e}")

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None


class PlainProgress:
    """``--progress``: one plain line on stderr per report, the first at once and then at most
    one every ``every`` seconds: 'nlfit: progress: iteration 12 loss 22.9' (single fits) or
    'nlfit: progress: 40/100 groups stopped'. For logs, and for programs that wait for a fit
    to be under way."""

    def __init__(self, single: bool, every: float = 1.0):
        import time

        self._single = single
        self._every = every
        self._clock = time.monotonic
        self._last = None

    def _due(self) -> bool:
        now = self._clock()
        if self._last is not None and now - self._last < self._every:
            return False
        self._last = now
        return True

    def __call__(self, *report) -> None:
        if not self._due():
            return
        if self._single:
            row = report[0]
            plain_line(f"nlfit: progress: iteration {row['iteration']} loss {row['loss']:.10g}")
        else:
            done, total = report
            plain_line(f"nlfit: progress: {done}/{total} groups stopped")

    def close(self) -> None:
        pass


class GroupProgress:
    """A rich progress bar on stderr, 'groups converged out of the total' (terminal only)."""

    def __init__(self, console: Console):
        self._console = console
        self._progress = None
        self._task = None

    def __call__(self, done: int, total: int) -> None:
        if not self._console.is_terminal:
            return
        if self._progress is None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            columns = (TextColumn("groups stopped"), BarColumn(), MofNCompleteColumn())
            # the rows are written to stdout meanwhile, as they are: not through rich
            self._progress = Progress(*columns, console=self._console, transient=True, redirect_stdout=False, redirect_stderr=False)
            self._progress.start()
            self._task = self._progress.add_task("fit", total=total)
        self._progress.update(self._task, completed=done)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
