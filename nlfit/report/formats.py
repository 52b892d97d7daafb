"""The output formats, one class each, shared by every command that writes a result.

A format turns each kind of result into text: a fit (one payload of the JSON contract, or a
list of them for a method comparison), the rows of a grouped fit, and a Jacobian check
(``nlfit check-jac``). ``FORMATS`` lists them; the commands take ``--format`` from
``NAMES`` and ``choose`` it. A new format is one class here and its entry in ``FORMATS``.
"""

from __future__ import annotations

from io import StringIO

from nlfit.errors import OptionError


class Json:
    name = "json"

    def fit(self, payload, color: bool = False) -> str:
        from nlfit.io.write import json_text

        return json_text(payload)

    def groups(self, fits, extra: dict | None = None, header: bool = True) -> str:
        """NDJSON: one fit result per line (there is no header); ``extra``: keys added to every row."""
        return "".join(self.group_lines(fits, extra))

    def group_lines(self, fits, extra: dict | None = None) -> list[str]:
        from nlfit.io.rows import json_rows

        return json_rows(fits, extra)

    def header(self, param_names) -> str:
        return ""

    def jacobian(self, payload: dict, color: bool = False) -> str:
        return self.fit(payload)


class Csv:
    name = "csv"

    def fit(self, payload, color: bool = False) -> str:
        from nlfit.io.write import params_csv_text

        return params_csv_text(payload)

    def groups(self, fits, extra: dict | None = None, header: bool = True) -> str:
        """One line per group, after the header line when ``header``."""
        return (self.header(fits.param_names) if header else "") + "".join(self.group_lines(fits, extra))

    def group_lines(self, fits, extra: dict | None = None) -> list[str]:
        from nlfit.io.rows import csv_lines

        return csv_lines(fits)

    def header(self, param_names) -> str:
        from nlfit.io.rows import csv_lines

        return csv_lines(None, param_names)[0]

    def jacobian(self, payload: dict, color: bool = False) -> str:
        """One row per parameter: its value and each mode's difference from forward mode."""
        import csv

        from nlfit.io.write import csv_number

        out = StringIO()
        writer = csv.writer(out, lineterminator="\n")
        modes = list(payload["differences"])
        writer.writerow(["parameter", "p0", *[f"{mode}_{kind}" for mode in modes for kind in ("abs", "rel")]])
        for name, value in payload["params"].items():
            cells = [csv_number(payload["differences"][mode][name][kind]) for mode in modes for kind in ("abs", "rel")]
            writer.writerow([name, csv_number(value), *cells])
        return out.getvalue()


class Table:
    """rich tables, with terminal codes only when ``color`` (the text goes to a terminal)."""

    name = "table"

    @staticmethod
    def _console(buffer: StringIO, color: bool, width: int):
        from rich.console import Console

        return Console(file=buffer, force_terminal=color, no_color=not color, width=width)

    def fit(self, payload, color: bool = False) -> str:
        from nlfit.report.console import comparison_table, method_title, params_table

        buffer = StringIO()
        console = self._console(buffer, color, 120)
        for single in payload if isinstance(payload, list) else [payload]:
            console.print(params_table(single, title=method_title(single) if isinstance(payload, list) else "parameters"))
        if isinstance(payload, list):
            console.print(comparison_table(payload))
        return buffer.getvalue()

    def groups(self, fits, extra: dict | None = None, header: bool = True) -> str:
        """Many groups read best as CSV (one line each), on a terminal too."""
        return Csv().groups(fits, extra, header)

    def group_lines(self, fits, extra: dict | None = None) -> list[str]:
        return Csv().group_lines(fits, extra)

    def header(self, param_names) -> str:
        return Csv().header(param_names)

    def jacobian(self, payload: dict, color: bool = False) -> str:
        from nlfit.report.console import plain_table

        modes = list(payload["differences"])
        table = plain_table(f"Jacobian check at p0 ({payload['residuals']} residuals)")
        table.add_column("parameter")
        table.add_column("p0", justify="right")
        for mode in modes:
            table.add_column(f"{mode} − fwd abs", justify="right")
            table.add_column(f"{mode} − fwd rel", justify="right")
        for name, value in payload["params"].items():
            cells = [name, "nan" if value is None else f"{value:.6g}"]
            for mode in modes:
                entry = payload["differences"][mode][name]
                cells += [_scientific(entry["abs"]), _scientific(entry["rel"])]
            table.add_row(*cells)
        buffer = StringIO()
        console = self._console(buffer, color, 160)
        console.print(table)
        cond, broken = payload["cond"], payload["nonfinite"]["fwd"]["count"] > 0
        if cond is None:  # JSON has no inf: a singular J, or none at all where J (forward mode) has inf or NaN entries
            cond = "undefined (non-finite entries)" if broken else "inf"
        console.print(f"condition number of J: {cond if isinstance(cond, str) else format(cond, '.3e')}")
        for mode, found in payload["nonfinite"].items():
            if found["count"]:
                where = ", ".join(f"row {entry['row']} {entry['param']}" for entry in found["entries"])
                more = f" and {found['count'] - len(found['entries'])} more" if found["count"] > len(found["entries"]) else ""
                console.print(f"non-finite entries by {mode}: {found['count']} ({where}{more})")
        console.print(payload["note"])
        return buffer.getvalue()


def _scientific(value) -> str:
    return "nan" if value is None else f"{value:.2e}"


FORMATS = (Json(), Csv(), Table())
NAMES = tuple(f.name for f in FORMATS)


def choose(name: str):
    """The format called ``name``; another name is an OptionError listing them."""
    for candidate in FORMATS:
        if candidate.name == name:
            return candidate
    raise OptionError(f"--format must be one of {', '.join(NAMES)}; got '{name}'")
