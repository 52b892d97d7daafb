"""Named self-starting models against R's nls with its selfStart models (tests/data/r).

The references come from ``tests/data/r/make_references.R`` (R 4.2.2): every fit from R's own
start rule, refined to nls's relative-offset tolerance 1e-10 (or the tightest of 1e-9 ... 1e-6
it reaches), on the subset of each help page and on other subjects, chicks, runs, plants and
seeds. nlfit fits each with the named model and no start values."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nlfit import fit
from nlfit.io.dataset import Dataset

R_DIR = Path(__file__).resolve().parent / "data" / "r"
REFERENCES = json.loads((R_DIR / "references.json").read_text())
NAMED = {
    "SSlogis": "logistic", "SSfpl": "fpl", "SSgompertz": "gompertz", "SSweibull": "weibull", "SSmicmen": "micmen",
    "SSasymp": "asymp", "SSasympOff": "asympoff", "SSasympOrig": "asymporig", "SSbiexp": "biexp", "SSfol": "fol",
}  # fmt: skip
SINGLE = [e for e in REFERENCES["single"] if e["ok"]]


def r_subset(entry) -> Dataset:
    """The rows of the R call's ``subset(...)`` as a Dataset of its x and y columns."""
    column = entry["subset"]["column"]
    frame = pd.read_csv(R_DIR / entry["data"], dtype={column: str})
    frame = frame[frame[column] == entry["subset"]["value"]]
    if entry["filter"]:
        frame = frame.query(entry["filter"].replace("&", "and"))
    x = frame[entry["x"]].to_numpy(dtype=float)
    return Dataset(x=x[:, 0] if x.shape[1] == 1 else x, y=frame[entry["y"]].to_numpy(dtype=float), x_names=tuple(entry["x"]), y_name=entry["y"])


def test_the_references_cover_every_self_start_model_on_several_subsets():
    counts = {name: sum(e["selfstart"] == name for e in SINGLE) for name in NAMED}
    assert min(counts.values()) >= 2 and sum(counts.values()) >= 60, counts
    assert {e["selfstart"] for e in SINGLE if e["help_page_subset"]} == set(NAMED)


@pytest.mark.parametrize("entry", SINGLE, ids=[e["id"] for e in SINGLE])
def test_named_model_without_start_values_equals_r_self_start_fit(entry):
    result = fit(r_subset(entry), NAMED[entry["selfstart"]])
    assert result.success, result.message
    assert list(result.model.param_names) == list(entry["params"])  # R's names, in R's order (and R's labels: lKe < lKa, lrc1 > lrc2)
    np.testing.assert_allclose(result.params, list(entry["params"].values()), rtol=1e-6)
    np.testing.assert_allclose(result.stats["rss"], entry["rss"], rtol=1e-6)
    np.testing.assert_allclose(result.stderr, list(entry["stderr"].values()), rtol=1e-5)
    assert result.stats["dof"] == entry["df_residual"]


def _entry(identifier):
    return next(e for e in SINGLE if e["id"] == identifier)


@pytest.mark.parametrize(
    ("identifier", "swapped", "check"),
    [
        ("SSfol/Theoph/Subject=1", {"lKe": 0.5, "lKa": -2.5, "lCl": -3.2}, lambda p: p["lKe"] < p["lKa"]),
        ("SSbiexp/Indometh/Subject=1", {"A1": 0.2, "lrc1": -1.6, "A2": 2.0, "lrc2": 0.8}, lambda p: p["lrc1"] > p["lrc2"]),
    ],
)
def test_exchangeable_labels_come_back_in_r_order_from_a_swapped_start(identifier, swapped, check):
    entry = _entry(identifier)
    result = fit(r_subset(entry), NAMED[entry["selfstart"]], p0=swapped, starts=1)
    params = dict(zip(result.model.param_names, result.params, strict=True))
    assert check(params), params
    np.testing.assert_allclose(result.params, list(entry["params"].values()), rtol=1e-6)
    np.testing.assert_allclose(result.stderr, list(entry["stderr"].values()), rtol=1e-5)


def test_the_co2_qn1_case_a_formula_missed_is_solved_by_asympoff_from_its_own_start():
    entry = _entry("SSasympOff/CO2/Plant=Qn1")
    data = r_subset(entry)
    from nlfit.models.registry import build_model

    model = build_model("asympoff", data.x, y_name="uptake", x_names=("conc",))
    start = model.default_p0(data.x, data.y)
    assert np.all(np.isfinite(start))
    result = fit(data, model, starts=1)  # the start rule alone, no multistart
    np.testing.assert_allclose(result.params, list(entry["params"].values()), rtol=1e-6)


def test_composite_model_prefixes_parameters_and_finds_both_peaks():
    rng = np.random.default_rng(3)
    x = np.linspace(0.0, 10.0, 400)
    truth = {
        "g1_amplitude": 6.0, "g1_center": 3.0, "g1_sigma": 0.4, "g2_amplitude": 3.0, "g2_center": 6.5, "g2_sigma": 0.7,
        "lin1_slope": 0.1, "lin1_intercept": 1.0,
    }  # fmt: skip

    def gauss(a, c, s):
        return a / (s * np.sqrt(2 * np.pi)) * np.exp(-((x - c) ** 2) / (2 * s * s))

    y = gauss(6.0, 3.0, 0.4) + gauss(3.0, 6.5, 0.7) + 0.1 * x + 1.0 + rng.normal(0.0, 0.02, x.size)
    result = fit(Dataset(x=x, y=y, x_names=("x",), y_name="y"), "gaussian+gaussian+linear")
    assert result.success, result.message
    assert list(result.model.param_names) == list(truth)
    fitted = dict(zip(result.model.param_names, result.params, strict=True))
    for name, value in truth.items():
        assert abs(fitted[name] - value) < 5 * result.stderr[list(truth).index(name)] + 1e-3, (name, fitted[name], value)


def test_models_command_lists_every_named_model_with_formula_parameters_and_start_rule():
    from nlfit.models.named import CATALOGUE, formula_of

    shown = subprocess.run([sys.executable, "-m", "nlfit", "models"], capture_output=True, text=True, check=True)
    rows: dict[str, list[str]] = {}
    last = None
    for line in shown.stdout.split("Named models", 1)[1].splitlines():
        cells = [cell.strip() for cell in line.split("│")]
        if len(cells) != 4:
            continue
        if cells[0]:
            last = rows.setdefault(cells[0], cells)
        elif last is not None:  # a cell wrapped onto the next line
            last[:] = [f"{a} {b}".strip() for a, b in zip(last, cells, strict=True)]
    for name, entry in CATALOGUE.items():
        assert name in rows, name
        formula, params, rule = (cell.replace(" ", "") for cell in rows[name][1:])
        assert formula == formula_of(entry, ("x1", "x2") if len(entry.variables) == 2 else ("x",)).replace(" ", "")
        assert params == ", ".join(entry.params).replace(" ", "") and rule.startswith(entry.rule.replace(" ", "")), rows[name]


def test_fit_json_names_the_model_and_its_formula_in_the_data_columns(tmp_path):
    entry = _entry("SSmicmen/Puromycin/state=treated")
    data = r_subset(entry)
    path = tmp_path / "puromycin.csv"
    pd.DataFrame({"conc": data.x, "rate": data.y}).to_csv(path, index=False)
    out = subprocess.run(
        [sys.executable, "-m", "nlfit", "fit", str(path), "-m", "micmen", "--x", "conc", "--y", "rate", "--format", "json"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    info = json.loads(out.stdout)["model_info"]
    assert info["name"] == "micmen" and info["formula"].replace(" ", "") == "Vm*conc/(K+conc)"
    assert info["params"] == ["Vm", "K"]


# --- global fits (--share) and nlfit compare, against R's indexed nls and anova -----------------

GLOBAL = REFERENCES["global"]


def _cli_fit(tmp_path, name, *args):
    path = tmp_path / f"{name}.json"
    done = subprocess.run([sys.executable, "-m", "nlfit", "fit", *args, "-f", "json", "-o", str(path), "-qq"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return path, json.loads(path.read_text())


def _matches_r(payload, reference):
    """Values, standard errors and RSS equal R's, the indexed names mapped to R's labels."""
    label = reference.get("param_label") or {name: name for name in reference["params"]}
    by_label = {shown: name for name, shown in label.items()}
    assert sorted(payload["params"]) == sorted(by_label), sorted(set(payload["params"]) ^ set(by_label))
    for name, entry in payload["params"].items():
        np.testing.assert_allclose(entry["value"], reference["params"][by_label[name]], rtol=1e-6, err_msg=name)
        np.testing.assert_allclose(entry["stderr"], reference["stderr"][by_label[name]], rtol=1e-5, err_msg=name)
    np.testing.assert_allclose(payload["stats"]["rss"], reference["rss"], rtol=1e-6)
    assert payload["stats"]["dof"] == reference["df_residual"]


@pytest.fixture(scope="module")
def loblolly_fits(tmp_path_factory):
    folder = tmp_path_factory.mktemp("loblolly")
    data = str(R_DIR / "Loblolly.csv")
    common = _cli_fit(folder, "common", data, "-m", "asymp", "--x", "age", "--y", "height")
    shared = _cli_fit(folder, "shared", data, "-m", "asymp", "--x", "age", "--y", "height", "--group-by", "Seed", "--share", "lrc")
    separate = _cli_fit(folder, "separate", data, "-m", "asymp", "--x", "age", "--y", "height", "--group-by", "Seed", "--share", "")
    return common, shared, separate


def test_global_fit_with_shared_lrc_equals_r_indexed_nls_on_loblolly(loblolly_fits):
    common, shared, separate = loblolly_fits
    _matches_r(common[1], GLOBAL["loblolly_common"])
    _matches_r(shared[1], GLOBAL["loblolly_shared_lrc"])
    _matches_r(separate[1], GLOBAL["loblolly_separate"])
    assert shared[1]["model_info"]["shared"] == ["lrc"] and shared[1]["model_info"]["group_by"] == "Seed"
    n = len(shared[1]["params"])
    assert np.shape(shared[1]["covariance"]) == (n, n)  # the joint covariance of shared and per-group parameters


def test_global_fit_of_a_formula_equals_mass_muscle_example(tmp_path):
    _, payload = _cli_fit(
        tmp_path, "muscle", str(R_DIR / "muscle.csv"), "-m", "alpha + beta*exp(-Conc/th)", "--y", "Length", "--group-by", "Strip", "--share", "th"
    )
    _matches_r(payload, GLOBAL["muscle_indexed"])


def test_compare_gives_r_anova_f_and_p_and_r_information_criteria(loblolly_fits):
    (common, c), (shared, s), (separate, _) = loblolly_fits
    done = subprocess.run([sys.executable, "-m", "nlfit", "compare", str(common), str(shared), str(separate), "-f", "json"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    for test, key in zip(found["f_tests"], ("loblolly_common_vs_shared_lrc", "loblolly_shared_lrc_vs_separate"), strict=True):
        reference = REFERENCES["anova"][key]
        np.testing.assert_allclose(test["F"], reference["F"], rtol=1e-6)
        np.testing.assert_allclose(test["p"], reference["p"], rtol=1e-5)
        assert test["df"] == reference["df"]
    for row, key in zip(found["models"], ("loblolly_common", "loblolly_shared_lrc", "loblolly_separate"), strict=True):
        np.testing.assert_allclose([row["aic"], row["bic"]], [GLOBAL[key]["AIC"], GLOBAL[key]["BIC"]], rtol=1e-8)
    assert abs(sum(row["akaike_weight"] for row in found["models"]) - 1.0) < 1e-12
    assert found["preferred_by_aicc"] == str(shared)


def test_compare_reads_grouped_rows_as_separate_curves_and_refuses_other_data(loblolly_fits, tmp_path):
    (_, _), (shared, _), (_, separate) = loblolly_fits
    rows = tmp_path / "rows.ndjson"
    command = ["fit", str(R_DIR / "Loblolly.csv"), "-m", "asymp", "--x", "age", "--y", "height", "--group-by", "Seed", "-f", "json", "-o", str(rows), "-qq"]
    done = subprocess.run([sys.executable, "-m", "nlfit", *command], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    found = json.loads(subprocess.run([sys.executable, "-m", "nlfit", "compare", str(shared), str(rows), "-f", "json"], capture_output=True, text=True).stdout)
    assert found["models"][1]["groups"] == 14
    np.testing.assert_allclose(found["models"][1]["rss"], separate["stats"]["rss"], rtol=1e-8)
    np.testing.assert_allclose(found["F"], REFERENCES["anova"]["loblolly_shared_lrc_vs_separate"]["F"], rtol=1e-6)
    other = tmp_path / "other.json"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "nlfit",
            "fit",
            str(R_DIR / "Puromycin.csv"),
            "-m",
            "micmen",
            "--x",
            "conc",
            "--y",
            "rate",
            "-f",
            "json",
            "-o",
            str(other),
            "-qq",
        ],
        check=True,
    )
    refused = subprocess.run([sys.executable, "-m", "nlfit", "compare", str(shared), str(other)], capture_output=True, text=True)
    assert refused.returncode != 0 and "different data" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert "Traceback" not in refused.stderr


def test_share_needs_group_by_and_known_parameter_names(tmp_path):
    data = str(R_DIR / "Loblolly.csv")
    for extra, message in ((["--share", "lrc"], "--share needs --group-by"), (["--group-by", "Seed", "--share", "nope"], "unknown parameter")):
        done = subprocess.run(
            [sys.executable, "-m", "nlfit", "fit", data, "-m", "asymp", "--x", "age", "--y", "height", *extra], capture_output=True, text=True
        )
        assert done.returncode != 0 and message in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_predict_gives_each_component_of_a_sum(tmp_path):
    x = np.linspace(0.0, 10.0, 200)
    y = 5.0 / (0.5 * np.sqrt(2 * np.pi)) * np.exp(-((x - 4.0) ** 2) / 0.5) + 0.2 * x + np.random.default_rng(0).normal(0, 0.01, x.size)
    path = tmp_path / "peak.csv"
    pd.DataFrame({"x": x, "y": y}).to_csv(path, index=False)
    fitted, _ = _cli_fit(tmp_path, "peak", str(path), "-m", "gaussian+linear")
    done = subprocess.run([sys.executable, "-m", "nlfit", "predict", str(fitted), "--at", "2,4"], capture_output=True, text=True, check=True)
    table = pd.read_csv(pd.io.common.StringIO(done.stdout))
    assert list(table.columns[:4]) == ["x", "y", "g1", "lin1"]
    np.testing.assert_allclose(table["g1"] + table["lin1"], table["y"], rtol=1e-12)


# --- every named model recovers the parameters it generated, from its own start ---------------

SYNTHETIC = {
    "logistic": ((10, 5, 1.5), np.linspace(0, 15, 40)),
    "fpl": ((2, 12, 5, 1.5), np.linspace(0, 15, 40)),
    "gompertz": ((10, 3, 0.7), np.linspace(0, 10, 40)),
    "weibull": ((10, 8, -2, 1.5), np.linspace(0.1, 6, 40)),
    "micmen": ((200, 0.05), np.geomspace(0.01, 1, 30)),
    "asymp": ((100, 5, -2), np.linspace(0, 25, 30)),
    "asympoff": ((30, -4.5, 80), np.linspace(100, 1000, 30)),
    "asymporig": ((50, -1.5), np.linspace(0, 20, 30)),
    "biexp": ((3, 1, 0.6, -1.5), np.linspace(0.1, 8, 40)),
    "4pl": ((10, 100, -6, 1.2), np.linspace(-9, -3, 30)),
    "5pl": ((10, 100, -6, 1.2, 2.0), np.linspace(-9, -3, 40)),
    "hill": ((5, 100, 2.0, 1.5), np.geomspace(0.05, 20, 30)),
    "decay": ((100, 10, 0.5), np.linspace(0, 10, 30)),
    "decay2": ((10, 60, 2.0, 30, 0.2), np.linspace(0, 20, 60)),
    "association": ((5, 80, 0.4), np.linspace(0, 15, 30)),
    "association2": ((0, 50, 3.0, 30, 0.2), np.linspace(0, 20, 60)),
    "gaussian": ((5, 3, 0.5), np.linspace(0, 10, 100)),
    "lorentzian": ((5, 3, 0.5), np.linspace(0, 10, 100)),
    "pvoigt": ((5, 3, 0.5, 0.3), np.linspace(0, 10, 100)),
    "voigt": ((5, 3, 0.4, 0.3), np.linspace(0, 10, 100)),
    "linear": ((2, -1), np.linspace(0, 10, 20)),
    "exponential": ((10, 3), np.linspace(0, 10, 30)),
    "powerlaw": ((2, 1.5), np.linspace(0.1, 10, 30)),
}


def test_every_one_variable_named_model_has_a_synthetic_case():
    from nlfit.models.named import CATALOGUE

    assert {name for name, entry in CATALOGUE.items() if len(entry.variables) == 1} == set(SYNTHETIC)


@pytest.mark.parametrize("name", list(SYNTHETIC))
def test_named_model_start_rule_alone_recovers_the_generating_parameters(name):
    from nlfit.models.expression import evaluate_numpy
    from nlfit.models.registry import build_model

    truth, x = SYNTHETIC[name]
    model = build_model(name, x)
    clean = evaluate_numpy(model, np.array(truth, dtype=float), x)
    y = clean + np.random.default_rng(0).normal(0.0, 1e-3 * np.ptp(clean), x.size)
    result = fit(Dataset(x=x, y=y, x_names=("x",), y_name="y"), model, starts=1)  # the start rule, no multistart
    assert result.success, result.message
    assert np.all(np.abs(result.params - np.array(truth)) <= 6 * result.stderr + 1e-12), (result.params, result.stderr)
    assert np.all(result.stderr <= 0.1 * np.maximum(np.abs(truth), 1e-2 * np.ptp(clean)))  # determined: the check above is not vacuous


def test_predict_of_a_global_fit_gives_every_groups_curve_from_its_own_and_the_shared_parameters(loblolly_fits):
    (_, _), (shared, payload), _ = loblolly_fits
    done = subprocess.run([sys.executable, "-m", "nlfit", "predict", str(shared), "--at", "5,20"], capture_output=True, text=True, check=True)
    table = pd.read_csv(pd.io.common.StringIO(done.stdout))
    params = {name: entry["value"] for name, entry in payload["params"].items()}
    age = np.array([5.0, 20.0])
    for seed in ("301", "329"):
        expected = params[f"Asym[{seed}]"] + (params[f"R0[{seed}]"] - params[f"Asym[{seed}]"]) * np.exp(-np.exp(params["lrc"]) * age)
        np.testing.assert_allclose(table[f"y[{seed}]"], expected, rtol=1e-12)
        assert np.all(table[f"conf_lo[{seed}]"] < table[f"y[{seed}]"])


def test_compare_refuses_failed_robust_mixed_weight_and_repeated_results_in_one_line(loblolly_fits, tmp_path):
    (common, payload), (shared, _), _ = loblolly_fits
    failed = tmp_path / "failed.json"
    failed.write_text(json.dumps({**payload, "success": False, "status": "max-iter"}))
    robust = tmp_path / "robust.json"
    robust.write_text(json.dumps({**payload, "loss": "soft_l1"}))
    weighted = tmp_path / "weighted.json"
    weighted.write_text(json.dumps({**payload, "stats": {**payload["stats"], "chi2": payload["stats"]["rss"]}}))
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({**payload, "params": [1, 2, 3]}))
    for other, message in ((failed, "did not converge"), (robust, "--loss"), (weighted, "weights"), (common, "given twice"), (broken, "'params' must be")):
        done = subprocess.run([sys.executable, "-m", "nlfit", "compare", str(common), str(other)], capture_output=True, text=True)
        assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_global_fit_plots_predicts_a_builtin_model_and_keeps_r_label_order_per_group(tmp_path):
    _, payload = _cli_fit(tmp_path, "fol", str(R_DIR / "Theoph.csv"), "-m", "fol", "--x", "Dose,Time", "--y", "conc", "--group-by", "Subject", "--share", "",
                          "--p0", "lKe=0.5,lKa=-2.5,lCl=-3.2", "--starts", "1")  # fmt: skip
    values = {name: entry["value"] for name, entry in payload["params"].items()}
    assert all(values[f"lKe[{g}]"] < values[f"lKa[{g}]"] for g in payload["model_info"]["groups"])  # every group in R's order from a swapped start
    picture = tmp_path / "muscle.png"
    _cli_fit(
        tmp_path,
        "muscle",
        str(R_DIR / "muscle.csv"),
        "-m",
        "alpha + beta*exp(-Conc/th)",
        "--y",
        "Length",
        "--group-by",
        "Strip",
        "--share",
        "th",
        "--plot",
        str(picture),
    )
    assert picture.stat().st_size > 10_000
    fitted, poly = _cli_fit(
        tmp_path, "poly", str(R_DIR / "Loblolly.csv"), "-m", "polynomial:2", "--x", "age", "--y", "height", "--group-by", "Seed", "--share", "c0"
    )
    done = subprocess.run([sys.executable, "-m", "nlfit", "predict", str(fitted), "--at", "3"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    table = pd.read_csv(pd.io.common.StringIO(done.stdout))
    c = {name: entry["value"] for name, entry in poly["params"].items()}
    np.testing.assert_allclose(table["y[301]"], c["c0"] + 3 * c["c1[301]"] + 9 * c["c2[301]"], rtol=1e-12)
