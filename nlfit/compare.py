"""``nlfit compare``: models fitted to the same data, side by side.

For every model: n, the number of estimated parameters p, the residual sum of squares and
its degrees of freedom, log-likelihood, AIC, AICc, BIC (as R's ``logLik.nls``: Gaussian
errors, the variance counted as a parameter unless the fit used --absolute-sigma), and the
Akaike weights exp(-Δ_i/2) / Σ exp(-Δ_j/2) of the AICc differences Δ (Burnham & Anderson).

Nested models (one a special case of the other: fewer parameters, same data), in the order
given, each against the one before, as R's ``anova(fit1, fit2, ...)``: the extra-sum-of-
squares F test

    F = ((RSS_1 - RSS_2) / (df_1 - df_2)) / (RSS_2 / df_2),   p = P(F(df_1 - df_2, df_2) > F)

(df: residual degrees of freedom). Whether the models are in fact nested is the user's
claim, as in R; a pair with equal degrees of freedom gets no F test.

A result may be one fit (``nlfit fit -f json``), a global fit (``--share``), or the rows of a
grouped fit (NDJSON of ``--group-by``), which count as one model of separate curves: RSS,
n and parameters summed, one residual variance (as R's indexed fit of separate curves), so
``compare global.json separate.ndjson`` asks whether the groups need curves of their own.

Results must be fits of the same data: the same input files (their sha256 in the
provenance), response column and number of points.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np

from nlfit.errors import InputError


@dataclass(frozen=True)
class Fitted:
    """What the comparison needs of one result."""

    label: str
    model: str
    n: int
    p: int  # estimated parameters
    rss: float  # the weighted sum of squares with --sigma
    dof: int
    loglik: float
    k: int  # parameters of the likelihood: p, and the variance unless it was known
    data: tuple  # (input sha256s, response column, predictor columns, n, weights): equal across results
    groups: int | None = None  # rows of a grouped fit combined
    left_out: tuple = ()  # groups of a grouped fit without data


def _checked(payload, label: str) -> dict:
    """``payload`` when it has the shape of a fit result (one-line errors otherwise)."""
    if not isinstance(payload, dict) or not all(k in payload for k in ("params", "stats", "model")):
        raise InputError(f"{label} is not an nlfit fit result (it needs 'model', 'params' and 'stats')")
    for key in ("params", "stats"):
        if not isinstance(payload[key], dict):
            raise InputError(f"{label}: '{key}' must be an object")
    if not all(isinstance(entry, dict) for entry in payload["params"].values()):
        raise InputError(f"{label}: every entry of 'params' must be an object (value, stderr, fixed, ...)")
    for key in ("data", "provenance"):
        if payload.get(key) is not None and not isinstance(payload[key], dict):
            raise InputError(f"{label}: '{key}' must be an object")
    return payload


def _estimated(payload: dict) -> int:
    return sum(1 for p in payload["params"].values() if not p.get("fixed"))


def _identity(payload: dict, label: str) -> tuple:
    """What must be equal across the results: the inputs (sha256), the response, the
    predictors (a global fit's group column aside), and the weights (none, relative, known)."""
    inputs = (payload.get("provenance") or {}).get("inputs")
    hashes = tuple(sorted(str(i.get("sha256")) for i in inputs if isinstance(i, dict))) if isinstance(inputs, list) else ()
    if not hashes:
        raise InputError(f"{label} has no provenance of its input (inputs' sha256): compare needs to know the data were the same")
    data = payload.get("data") or {}
    group_column = (payload.get("model_info") or {}).get("group_by") if isinstance(payload.get("model_info"), dict) else None
    x = data.get("x") if isinstance(data.get("x"), list) else []
    predictors = tuple(sorted(str(c) for c in x if c != group_column))
    weights = "known" if payload.get("absolute_sigma") else "relative" if payload["stats"].get("chi2") is not None else "none"
    return hashes, data.get("y"), predictors, weights


def _number(value, key: str, label: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise InputError(f"{label}: stats.{key} must be a finite number; got {value!r}")
    return float(value)


def from_payloads(payloads: list, label: str) -> Fitted:
    """One model from one result, or from the rows of a grouped fit (module docstring). A
    fit that did not succeed, or one with a robust --loss, is refused: its sums of squares
    are not those of a least-squares fit. Rows of a grouped fit without data are left out."""
    payloads = [_checked(p, label) for p in payloads]
    empty = tuple(str(p.get("group")) for p in payloads if p.get("status") == "no-data")
    payloads = [p for p in payloads if p.get("status") != "no-data"]
    if not payloads:
        raise InputError(f"{label}: no group has data")
    for payload in payloads:
        where = label if "group" not in payload else f"{label} (group {payload['group']})"
        if payload.get("success") is not True:
            raise InputError(f"{where} did not converge (status {payload.get('status')}): compare needs converged fits")
        if payload.get("loss", "linear") != "linear":
            raise InputError(f"{where} used --loss {payload.get('loss')}: compare needs least-squares fits (--loss linear)")
    identities = {_identity(p, label) for p in payloads}
    if len(identities) > 1:
        raise InputError(f"{label}: its rows are fits of different data")
    stats = [p["stats"] for p in payloads]
    n = int(sum(_number(s.get("n"), "n", label) for s in stats))
    p = sum(_estimated(payload) for payload in payloads)
    rss = sum(_number(s.get("rss"), "rss", label) for s in stats)
    hashes, response, predictors, weights = identities.pop()
    if len(payloads) == 1:
        loglik = _number(stats[0].get("loglik"), "loglik", label)
        k = int(round((_number(stats[0].get("aic"), "aic", label) + 2 * loglik) / 2))
    elif weights == "known":  # known sigmas: the groups' likelihoods add
        loglik = sum(_number(s.get("loglik"), "loglik", label) for s in stats)
        k = p
    else:  # separate curves with one residual variance, as one indexed fit in R (and --share '')
        # each group's log-likelihood is -n_g/2 (log(2 pi rss_g / n_g) + 1) - sum(log sigma) (stats.py)
        log_sigma = sum(-_number(s.get("loglik"), "loglik", label) - 0.5 * s["n"] * (math.log(2 * math.pi * s["rss"] / s["n"]) + 1.0) for s in stats)
        loglik = -0.5 * n * (math.log(2 * math.pi * rss / n) + 1.0) - log_sigma if rss > 0 else math.inf
        k = p + 1
    model = payloads[0]["model"] if len(payloads) == 1 else f"{payloads[0]['model']} per group"
    data = (hashes, response, predictors, n, weights)
    return Fitted(label, str(model), n, p, rss, n - p, loglik, k, data, len(payloads) if len(payloads) > 1 else None, empty)


def parse(text: str, path: str) -> Fitted:
    """The model of a result file's text: one JSON object, or NDJSON rows of a grouped fit."""
    try:
        payloads = [json.loads(text)]
    except json.JSONDecodeError:
        try:
            payloads = [json.loads(line) for line in text.splitlines() if line.strip()]
        except (json.JSONDecodeError, RecursionError):
            raise InputError(f"{path} is not a fit result (not JSON, nor JSON lines)") from None
    except RecursionError:
        raise InputError(f"{path} is not a fit result (JSON nested too deeply)") from None
    if not text.strip():
        raise InputError(f"{path} is empty")
    if not payloads or isinstance(payloads[0], list):
        raise InputError(f"{path} is not one fit result (a method comparison is a list of fits: save one fit per file to compare models)")
    return from_payloads(payloads, path)


def compare(models: list[Fitted]) -> dict:
    """The comparison (module docstring) as a JSON-ready dict."""
    if len(models) < 2:
        raise InputError("compare needs at least two fit results")
    first = models[0]
    labels = [m.label for m in models]
    twice = next((label for label in labels if labels.count(label) > 1), None)
    if twice is not None:
        raise InputError(f"{twice} is given twice: compare needs different fits")
    what = ("input files (sha256)", "response column", "predictor columns", "number of points", "weights (--sigma, --absolute-sigma)")
    for other in models[1:]:
        differs = next((i for i in range(len(what)) if other.data[i] != first.data[i]), None)
        if differs is not None:
            raise InputError(f"{first.label} and {other.label} are fits of different data (their {what[differs]} differ): compare needs one data set")
    rows = []
    for m in models:
        aic = 2 * m.k - 2 * m.loglik
        aicc = aic + (2 * m.k * (m.k + 1) / (m.n - m.k - 1) if m.n - m.k - 1 > 0 else math.inf)
        bic = m.k * math.log(m.n) - 2 * m.loglik
        rows.append({"file": m.label, "model": m.model, "n": m.n, "params": m.p, "rss": m.rss, "dof": m.dof, "loglik": m.loglik,
                     "aic": aic, "aicc": aicc, "bic": bic, **({"groups": m.groups} if m.groups else {})})  # fmt: skip
    aiccs = np.array([r["aicc"] for r in rows])
    with np.errstate(invalid="ignore", over="ignore"):
        delta = aiccs - np.min(aiccs[np.isfinite(aiccs)]) if np.any(np.isfinite(aiccs)) else np.full(len(rows), np.nan)
        weights = np.exp(-0.5 * delta)
        weights = weights / np.nansum(weights)
    for row, d, w in zip(rows, delta, weights, strict=True):
        row["delta_aicc"] = float(d) if np.isfinite(d) else None
        row["akaike_weight"] = float(w) if np.isfinite(w) else 0.0
    tests = []
    for before, after in zip(models, models[1:], strict=False):
        tests.append(f_test(before, after))
    out = {
        "models": rows,
        "f_tests": tests,
        "preferred_by_aicc": rows[int(np.nanargmin(np.where(np.isfinite(aiccs), aiccs, np.nan)))]["file"] if np.any(np.isfinite(aiccs)) else None,
    }
    if len(models) == 2 and tests[0].get("F") is not None:
        out.update(F=tests[0]["F"], df=tests[0]["df"], p=tests[0]["p"])
    return out


def f_test(simpler: Fitted, fuller: Fitted) -> dict:
    """The extra-sum-of-squares F test of ``simpler`` against ``fuller`` (R's anova order:
    the second against the first, whichever has fewer parameters)."""
    from scipy import stats

    test = {"models": [simpler.label, fuller.label]}
    numerator = simpler.dof - fuller.dof
    if numerator == 0 or fuller.dof <= 0:
        return {
            **test,
            "F": None,
            "df": [numerator, fuller.dof],
            "p": None,
            "note": "equal degrees of freedom: no F test" if numerator == 0 else "no residual degrees of freedom",
        }
    small, large = (simpler, fuller) if numerator > 0 else (fuller, simpler)
    df_num, df_den = abs(numerator), large.dof
    f_value = ((small.rss - large.rss) / df_num) / (large.rss / df_den) if large.rss > 0 else math.inf
    p_value = float(stats.f.sf(f_value, df_num, df_den)) if math.isfinite(f_value) else 0.0
    return {**test, "F": f_value, "df": [df_num, df_den], "p": p_value, "sum_sq": small.rss - large.rss}
