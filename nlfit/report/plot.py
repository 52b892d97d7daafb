"""Pictures of a fit (matplotlib, the optional extra ``nlfit[plot]``).

Three panels, as in the lecture: the data with the fitted curve and its confidence band,
the residuals, and the loss history on a log scale. For a method comparison every
method's curve, residuals and loss history share the panels. Models with several
predictors show fitted against observed values instead of a curve.
"""

from __future__ import annotations

import io

import numpy as np

from nlfit.errors import OptionError

FORMATS = (".png", ".svg", ".pdf")


def require_matplotlib(path: str) -> None:
    """Fail before fitting when the picture cannot be made."""
    if not path.lower().endswith(FORMATS):
        raise OptionError(f"--plot must end in {', '.join(FORMATS)}; got '{path}'")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise OptionError("--plot needs matplotlib: pip install 'nlfit[plot]'") from None
    import os
    from pathlib import Path

    folder = Path(path).parent if str(Path(path).parent) else Path(".")
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise OptionError(f"--plot {path}: the folder {folder} does not exist or is not writable")


def render(payloads: list[dict], dataset, path: str) -> None:
    """Draw the fit(s) in ``payloads`` to ``path`` (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nlfit.io.write import write_atomic
    from nlfit.predict import load_result, predict

    x = np.asarray(dataset.x)
    one_predictor = x.ndim == 1
    figure, (top, middle, bottom) = plt.subplots(3, 1, figsize=(8, 10), constrained_layout=True)
    if one_predictor:
        # on the fitted scale: for 'log(y) = ...' the points are log(y), as the curve is
        shown = load_result(payloads[0])[0].transform_response(np.asarray(dataset.y), x)
        top.scatter(x, shown, s=12, color="0.5", label="data")
        grid = np.linspace(x.min(), x.max(), 400)
    best = min(p["stats"]["loss"] for p in payloads)
    longest = max(len(p["history"]) for p in payloads)
    shortest = min(len(p["history"]) for p in payloads)
    for index, payload in enumerate(payloads):
        colour = f"C{index}"
        label = f"{payload['method']} × {payload['globalization']}" if len(payloads) > 1 else payload["model"]
        fitted = predict(payload, x)["y"]
        observed = load_result(payload)[0].transform_response(np.asarray(dataset.y), x)  # the fitted scale
        if one_predictor:
            curve = predict(payload, grid)
            top.plot(grid, curve["y"], color=colour, lw=2, label=label)
            if "conf_lo" in curve:
                top.fill_between(grid, curve["conf_lo"], curve["conf_hi"], color=colour, alpha=0.25, lw=0)
            parts = [k for k in curve if k not in ("y", "conf_lo", "conf_hi", "pred_lo", "pred_hi")]  # a sum's components
            for j, part in enumerate(parts):
                shade = colour if len(payloads) > 1 else f"C{j + 1}"
                top.plot(grid, curve[part], color=shade, lw=1, ls="--", label=f"{label}: {part}" if len(payloads) > 1 else part)
            middle.scatter(x, observed - fitted, s=10, color=colour, label=label)
        else:
            top.scatter(observed, fitted, s=12, color=colour, label=label)
            middle.scatter(np.arange(len(fitted)), observed - fitted, s=10, color=colour, label=label)
        losses = np.array([row["loss"] for row in payload["history"]], dtype=float)
        if len(payloads) > 1:
            losses = losses - best + 1e-16 * max(best, 1.0)  # the convergence of each method shows
        iterations = [row["iteration"] for row in payload["history"]]
        bottom.semilogy(iterations, np.maximum(losses, np.finfo(float).tiny), color=colour, lw=2, label=label)
    if one_predictor:
        level = payloads[0].get("stats", {}).get("conf_level", 0.95)
        top.set(title=f"data and fit (band: {100 * level:g}% confidence)", xlabel=dataset.x_names[0], ylabel=dataset.y_name)
        middle.set(xlabel=dataset.x_names[0])
    else:
        shown = load_result(payloads[0])[0].transform_response(np.asarray(dataset.y), x)
        lo, hi = float(np.min(shown)), float(np.max(shown))
        top.plot([lo, hi], [lo, hi], color="k", lw=1)
        top.set(title="fitted against observed", xlabel=f"observed {dataset.y_name}", ylabel="fitted")
        middle.set(xlabel="row")
    middle.axhline(0.0, color="k", lw=1)
    middle.set(title="residuals (data - fit)", ylabel="residual")
    if len(payloads) > 1:
        bottom.set(title="loss history (one log scale)", xlabel="iteration", ylabel="loss − best final loss")
        if longest > 20 * shortest:
            bottom.set_xscale("symlog", linthresh=10)
    else:
        bottom.set(title="loss history", xlabel="iteration", ylabel="loss = ½‖r‖²")
    for axes in (top, middle, bottom):
        axes.legend(loc="best", fontsize="small")
    buffer = io.BytesIO()
    figure.savefig(buffer, format=path.rsplit(".", 1)[-1].lower(), dpi=110)
    plt.close(figure)
    try:
        write_atomic(path, buffer.getvalue())
    except OSError as exc:
        raise OptionError(f"cannot write --plot {path}: {exc.strerror or exc}") from None
