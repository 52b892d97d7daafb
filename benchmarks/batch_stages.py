"""Where a grouped fit's time goes, per fit, on one core: the stages of ``benchmarks/batch.py``'s
pipeline (Parquet in, NDJSON out) timed one by one, and what the rows' text costs at least.

    python benchmarks/batch_stages.py [--problem rational] [--groups 20000] [--runs 3]

The process binds itself to one core (as ``taskset -c 0``) before JAX starts, and turns the
helper processes off, so every stage runs here, one after the other. The pipeline runs once
to compile, then ``--runs`` times; each stage's best time over the runs is reported in
microseconds per fit:

- read: ``read_dataset`` of the Parquet file; prepare: ``GroupFits`` (``nlfit.prepare``);
- solve: ``nlfit.fitting.solve`` (the batched solver, block by block);
- linearize, polish, statistics, checks, assemble: the post-processing stages of
  ``nlfit.postprocess.finish``;
- rows: ``nlfit.io.rows.json_rows`` (the NDJSON text, as ``nlfit fit -f json`` writes it);
- the whole pipeline, and what is not in any stage above.

Then two floors of the rows' text, from the same fits' rows: ``orjson.dumps`` alone of the
rows' dicts built beforehand, and the rows assembled with ``%`` from a template whose
numbers are already text (each row is about 2.4 kB).
"""

from __future__ import annotations

import argparse
import collections
import functools
import os
import sys
import tempfile
import time

if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # before JAX starts: one core, one device
os.environ["NLFIT_PROCESSES"] = "off"
os.environ.setdefault("NLFIT_WORKER", "off")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import batch  # noqa: E402

STAGES = {
    "solve": ("nlfit.fitting", "solve"),
    "linearize": ("nlfit.postprocess", "linearize"),
    "polish": ("nlfit.postprocess", "polish"),
    "statistics": ("nlfit.postprocess", "statistics"),
    "checks": ("nlfit.postprocess", "checks"),
    "assemble": ("nlfit.postprocess", "assemble"),
    "rows": ("nlfit.io.rows", "json_rows"),
}


def timed(seconds: collections.Counter, name: str, function):
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        began = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            seconds[name] += time.perf_counter() - began

    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problem", default="rational", choices=list(batch.PROBLEMS))
    parser.add_argument("--groups", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    import importlib

    import orjson

    from nlfit import provenance
    from nlfit.batch import GroupFits
    from nlfit.cli.fit import block_rows
    from nlfit.io import rows
    from nlfit.io.read import read_dataset
    from nlfit.options import FitOptions
    from nlfit.report.formats import Json

    seconds: collections.Counter = collections.Counter()
    for name, (module, attribute) in STAGES.items():
        owner = importlib.import_module(module)
        setattr(owner, attribute, timed(seconds, name, getattr(owner, attribute)))
    _, formula, x_names = batch.PROBLEMS[args.problem]
    options = FitOptions(starts=1)
    with tempfile.TemporaryDirectory() as folder:
        path, starts_path = batch.write(folder, args.problem, [args.groups])[0]
        starts = np.load(starts_path)

        def pipeline() -> list:
            began = time.perf_counter()
            data = read_dataset(path, x_columns=x_names, y_column="y", group_column="id")
            seconds["read"] += time.perf_counter() - began
            began = time.perf_counter()
            fits = GroupFits(data, formula, group_starts=starts, options=options)
            seconds["prepare"] += time.perf_counter() - began
            stamp = {"provenance": provenance.compact(provenance.build(data.inputs, {}, options))}
            return [part for _, (part, _) in fits.blocks(functools.partial(block_rows, Json(), stamp))], stamp

        pipeline()  # compiles
        best: dict = {}
        for _ in range(args.runs):
            seconds.clear()
            began = time.perf_counter()
            parts, stamp = pipeline()
            seconds["pipeline"] = time.perf_counter() - began
            for name, value in seconds.items():
                best[name] = min(best.get(name, np.inf), value)
    print(f"{args.problem}, {args.groups} groups, one core, best of {args.runs} runs: microseconds per fit")
    accounted = 0.0
    for name in ("read", "prepare", *STAGES):
        accounted += best.get(name, 0.0)
        print(f"  {name:12s} {best.get(name, 0.0) / args.groups * 1e6:8.1f}")
    print(f"  {'other':12s} {(best['pipeline'] - accounted) / args.groups * 1e6:8.1f}")
    print(f"  {'pipeline':12s} {best['pipeline'] / args.groups * 1e6:8.1f}   ({args.groups / best['pipeline']:.0f} fits/s)")

    # The floors of the rows' text: the rows of the last run's fits
    texts = [line for part in parts for line in rows.json_rows(part, stamp)]
    dicts = [orjson.loads(line) for line in texts]
    floors = collections.defaultdict(lambda: np.inf)
    for _ in range(args.runs):
        with rows.paused_collection():
            began = time.perf_counter()
            dumped = [orjson.dumps(d, option=orjson.OPT_APPEND_NEWLINE) for d in dicts]
            floors["orjson.dumps of built dicts"] = min(floors["orjson.dumps of built dicts"], time.perf_counter() - began)
            del dumped
            template, columns = _template(dicts)
            began = time.perf_counter()
            assembled = [template % values for values in zip(*columns, strict=True)]
            floors["'%' of text fields"] = min(floors["'%' of text fields"], time.perf_counter() - began)
            del assembled
    print(f"the rows' text (mean {np.mean([len(t) for t in texts]):.0f} characters): microseconds per row")
    for name, value in floors.items():
        print(f"  {name:30s} {value / len(texts) * 1e6:8.1f}")


def _template(dicts: list) -> tuple[str, list]:
    """A '%s' template of the rows' JSON with every number, boolean and null a field (the
    strings kept as the first row has them), and each field's column of texts. Only the
    rows of the first row's layout are kept: the floor is about the assembly."""
    import orjson

    mark = "\x01"

    def fields(value, out):
        if isinstance(value, dict):
            return {key: fields(item, out) for key, item in value.items()}
        if isinstance(value, list):
            return [fields(item, out) for item in value]
        if isinstance(value, str):
            return value
        out.append(orjson.dumps(value).decode())
        return mark

    marked = fields(dicts[0], [])
    count = len(_values(dicts[0]))
    rows = [values for values in (_values(d) for d in dicts) if len(values) == count]
    text = orjson.dumps(marked).decode().replace("%", "%%").replace(orjson.dumps(mark).decode(), "%s")
    return text + "\n", [list(column) for column in zip(*rows, strict=True)]


def _values(value) -> list[str]:
    """The text of every number, boolean and null of ``value``, in order."""
    import orjson

    out = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(reversed(list(item.values())))
        elif isinstance(item, list):
            stack.extend(reversed(item))
        elif not isinstance(item, str):
            out.append(orjson.dumps(item).decode())
    return out


if __name__ == "__main__":
    main()
