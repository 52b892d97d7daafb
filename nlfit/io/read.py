"""CSV (a path, or ``-`` for stdin) or a NIST StRD ``.dat`` file -> :class:`Dataset`.

Column choice: ``x_columns`` and ``y_column`` name columns; by default the columns called
``x`` and ``y`` are used, else the first and second columns. Every selected cell must be a
finite number; the first one that is not is reported with its row and column.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np

from nlfit.errors import InputError
from nlfit.io.dataset import Dataset


def read_dataset(
    source: str,
    x_columns: list[str] | None = None,
    y_column: str | None = None,
    sigma_column: str | None = None,
    stdin=None,
    group_column: str | None = None,
    formula: str | None = None,
) -> Dataset:
    """Read ``source`` (a path, or ``-`` for stdin) and pick the columns of the fit. With a
    ``formula`` (a user formula), every data column it names is a predictor
    (``nlfit.models.expression.choose_columns``)."""
    from nlfit.models.registry import is_formula

    if not is_formula(formula):
        formula = None
    if source != "-" and source.lower().endswith(".dat"):
        from nlfit.io.nist import read_nist

        dataset = read_nist(Path(source))
        if formula is not None:
            x_columns, y_column = _formula_columns(formula, [dataset.y_name, *dataset.x_names], x_columns, y_column, (sigma_column,))
            if (tuple(x_columns), y_column) == (dataset.x_names, dataset.y_name) and not sigma_column:
                return dataset
        if x_columns or y_column or sigma_column:
            frame = _frame_from_dataset(dataset)
            return _select(frame, x_columns, y_column, sigma_column, source, dataset.extra)
        return dataset
    text_columns = (group_column,) if group_column else ()
    if source != "-" and any(ch in source for ch in "*?["):
        import glob

        import pandas as pd

        files = sorted(glob.glob(source))
        if not files:
            raise InputError(f"no file matches {source}")
        frames = [_read_csv(name, None, text_columns) for name in files]
        if any(list(f.columns) != list(frames[0].columns) for f in frames):
            raise InputError(f"the files matching {source} do not all have the same columns")
        frame = pd.concat(frames, ignore_index=True)
    else:
        frame = _read_csv(source, stdin, text_columns)
    if formula is not None:
        x_columns, y_column = _formula_columns(formula, list(frame.columns), x_columns, y_column, (sigma_column, group_column))
    # With --group-by a missing or non-finite number only fails its own group (status nonfinite).
    dataset = _select(frame, x_columns, y_column, sigma_column, source, {}, exclude=group_column, allow_nonfinite=group_column is not None)
    if group_column is None:
        return dataset
    if group_column not in frame.columns:
        raise InputError(f"unknown --group-by column '{group_column}' in {source}; columns are: {', '.join(frame.columns)}")
    keys = frame[group_column].astype(object).map(lambda v: str(v).strip()).to_numpy(dtype=object)
    return Dataset(**{**dataset.__dict__, "groups": keys})


def _formula_columns(formula, columns, x_columns, y_column, reserved):
    from nlfit.errors import FormulaError
    from nlfit.models.expression import choose_columns

    try:
        return choose_columns(formula, [str(c).strip() for c in columns], x_columns, y_column, reserved)
    except FormulaError as error:
        raise InputError(f"{error} (columns: {', '.join(str(c) for c in columns)})") from None


NA_TEXT = ["", "nan", "NaN", "NA", "N/A", "null", "NULL", "-nan", "-NaN"]


def _read_csv(source: str, stdin=None, text_columns: tuple[str, ...] = ()):
    """The CSV as a DataFrame; ``text_columns`` (a --group-by key) are kept as written."""
    import csv

    import pandas as pd

    if source == "-":
        stream = stdin if stdin is not None else sys.stdin
        text = stream.read()
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        label = "stdin"

        def handle():
            return io.StringIO(text)
    else:
        path = Path(source)
        if not path.exists():
            raise InputError(f"data file not found: {source}")
        if path.is_dir():
            raise InputError(f"data path is a directory, not a file: {source}")
        label = source

        def handle():
            return open(path, encoding="utf-8", errors="replace", newline="")

    try:
        with handle() as first:
            header = next(csv.reader(first), None)
    except OSError as exc:
        raise InputError(f"cannot read {label}: {exc.strerror or exc}") from None
    except csv.Error as exc:
        raise InputError(f"{label} is not valid CSV: {exc}") from None
    if not header or not any(cell.strip() for cell in header):
        raise InputError(f"{label} is empty: expected CSV with a header row")
    names = [cell.strip() for cell in header]
    duplicated = sorted({c for c in names if names.count(c) > 1})
    if duplicated:
        raise InputError(f"{label} has duplicate column names: {', '.join(duplicated)}")
    try:
        # Types are inferred by pandas' C parser (fast for large files); a column that does
        # not come out numeric is checked cell by cell only when it is used.
        with handle() as stream:
            frame = pd.read_csv(
                stream,
                skipinitialspace=True,
                low_memory=False,
                keep_default_na=False,
                na_values={name: NA_TEXT for name in header if name.strip() not in text_columns},
                dtype={name: object for name in header if name.strip() in text_columns},
            )
    except pd.errors.EmptyDataError:
        raise InputError(f"{label} is empty: expected CSV with a header row") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{label} is not valid CSV: {first_line}") from None
    except OSError as exc:
        raise InputError(f"cannot read {label}: {exc.strerror or exc}") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    if frame.shape[0] == 0:
        raise InputError(f"{label} has a header but no data rows")
    return frame


def _frame_from_dataset(dataset: Dataset):
    import pandas as pd

    columns = {dataset.y_name: dataset.y}
    x = dataset.x.reshape(dataset.n_points, -1)
    for i, name in enumerate(dataset.x_names):
        columns[name] = x[:, i]
    return pd.DataFrame(columns)


def _select(frame, x_columns, y_column, sigma_column, label, extra, exclude=None, allow_nonfinite=False) -> Dataset:
    names = [c for c in frame.columns if c != exclude]
    if x_columns is None:
        x_columns = ["x"] if "x" in names else names[:1]
    if y_column is None:
        if "y" in names:
            y_column = "y"
        else:
            rest = [c for c in names if c not in x_columns]
            if not rest:
                raise InputError(f"{label} needs at least two columns (x and y); it has {len(names)}")
            y_column = rest[0]
    wanted = [*x_columns, y_column] + ([sigma_column] if sigma_column else [])
    for column in wanted:
        if column not in names:
            raise InputError(f"unknown column '{column}' in {label}; columns are: {', '.join(names)}")
    values = {column: _numeric_column(frame, column, label, allow_nonfinite) for column in dict.fromkeys(wanted)}
    x = np.column_stack([values[c] for c in x_columns]) if len(x_columns) > 1 else values[x_columns[0]]
    sigma = None
    if sigma_column:
        sigma = values[sigma_column]
        bad = np.flatnonzero(sigma <= 0)
        if bad.size:
            raise InputError(f"{label}: sigma must be positive; row {bad[0] + 1}, column '{sigma_column}' is {sigma[bad[0]]:g}")
    return Dataset(
        x=x,
        y=values[y_column],
        x_names=tuple(x_columns),
        y_name=y_column,
        sigma=sigma,
        source=label,
        extra=extra,
    )


def _numeric_column(frame, column: str, label: str, allow_nonfinite: bool = False) -> np.ndarray:
    import pandas as pd

    raw = frame[column]
    if pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw):
        numbers = raw.to_numpy(dtype=np.float64)
    else:
        numbers = pd.to_numeric(raw.astype(str).str.strip(), errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(numbers))
    if allow_nonfinite:
        # keep NaN, inf and empty cells; text that is no number at all is still an error
        bad = np.array([i for i in bad if not (pd.isna(raw.iloc[i]) or _is_number_word(raw.iloc[i]))], dtype=int)
    if bad.size:
        row = int(bad[0])
        cell = raw.iloc[row]
        if pd.isna(cell) or str(cell).strip() == "":
            what = "is missing"
        else:
            what = f"is not a finite number: {str(cell).strip()!r}"
        raise InputError(f"{label}: row {row + 1} (line {row + 2}), column '{column}' {what}")
    return numbers


def _is_number_word(cell) -> bool:
    try:
        float(str(cell).strip())
        return True
    except ValueError:
        return str(cell).strip() == ""
