"""Every result says what produced it (provenance), and nlfit refit re-runs it from that alone."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from typer.testing import CliRunner

import nlfit
from nlfit.cli.app import app


def _runge(path, seed=0):
    done = CliRunner().invoke(app, ["generate", "runge", "--noise", "0.5", "--seed", str(seed), "--n", "60"])
    path.write_text(done.stdout)
    return path


def test_a_saved_fit_refits_to_the_same_parameters(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = _runge(tmp_path / "runge.csv")
    saved = CliRunner().invoke(app, ["fit", "runge.csv", "-m", "rational", "--starts", "3", "--seed", "5", "-q", "-o", "fit.json"])
    assert saved.exit_code == 0, saved.stderr
    payload = json.loads((tmp_path / "fit.json").read_text())
    stamp = payload["provenance"]
    assert stamp["nlfit"] == metadata.version("nlfit")
    assert set(stamp["versions"]) == {"python", "jax", "jaxlib", "numpy", "scipy"}
    assert stamp["seed"] == 5 and stamp["options"]["seed"] == 5 and stamp["options"]["starts"] == 3
    assert stamp["options"]["model"] == "rational" and stamp["options"]["missing"] == "drop"  # defaults included
    assert stamp["options"]["ftol"] == 1e-15 and stamp["options"]["method"] == "lm"
    [record] = stamp["inputs"]
    assert record["path"] == "runge.csv" and record["absolute"] == str(data)
    assert record["size"] == data.stat().st_size and record["sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()
    assert "seconds" not in json.dumps(stamp)  # timings stay outside what refit compares

    monkeypatch.chdir(tmp_path.parent)  # refit needs only the result: the data are found by their absolute path
    again = CliRunner().invoke(app, ["refit", str(tmp_path / "fit.json")])
    assert again.exit_code == 0, again.stderr
    report = json.loads(again.stdout)
    assert report["agree"] and report["tolerance"] == 0.0 and "same bits" in report["reason"]
    for name, entry in report["params"].items():
        assert entry["refit"] == entry["saved"] == payload["params"][name]["value"]
    assert "refit agrees" in again.stderr


def test_refit_refuses_changed_data_naming_the_file_and_both_hashes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = _runge(tmp_path / "runge.csv")
    assert CliRunner().invoke(app, ["fit", "runge.csv", "-m", "rational", "-q", "-o", "fit.json"]).exit_code == 0
    before = hashlib.sha256(data.read_bytes()).hexdigest()
    raw = bytearray(data.read_bytes())
    raw[-3] = ord("7") if raw[-3] != ord("7") else ord("8")  # one byte of the last number
    data.write_bytes(bytes(raw))
    after = hashlib.sha256(bytes(raw)).hexdigest()
    refused = CliRunner().invoke(app, ["refit", "fit.json"])
    assert refused.exit_code == 2 and refused.stdout == ""
    assert refused.stderr.count("\n") == 1 and "runge.csv changed since the fit" in refused.stderr
    assert before in refused.stderr and after in refused.stderr


def test_stdin_is_hashed_and_refit_reads_it_again(tmp_path):
    text = _runge(tmp_path / "runge.csv").read_text()
    saved = CliRunner().invoke(app, ["fit", "-", "-m", "a/(1+b*x^2)", "--p0", "a=1,b=5", "-q"], input=text)
    assert saved.exit_code == 0, saved.stderr
    [record] = json.loads(saved.stdout)["provenance"]["inputs"]
    assert record["path"] == "-" and record["absolute"] is None and record["sha256"] == hashlib.sha256(text.encode()).hexdigest()
    (tmp_path / "fit.json").write_text(saved.stdout)
    assert CliRunner().invoke(app, ["refit", str(tmp_path / "fit.json")], input=text).exit_code == 0
    other = CliRunner().invoke(app, ["refit", str(tmp_path / "fit.json")], input=text.replace("\n", "\n\n", 1))
    assert other.exit_code == 2 and "- changed since the fit" in other.stderr


def test_grouped_rows_carry_the_short_form(tmp_path):
    rows = "id,x,y\n" + "".join(f"g{g},{x},{(g + 1) * 2.718281828 ** (-0.5 * x) + 0.01 * ((x * 7) % 3)}\n" for g in range(3) for x in range(8))
    path = tmp_path / "groups.csv"
    path.write_text(rows)
    done = CliRunner().invoke(app, ["fit", str(path), "--group-by", "id", "-m", "a*exp(-b*x)", "--p0", "a=1,b=1", "-f", "json", "-q"])
    assert done.exit_code == 0, done.stderr
    stamps = [json.loads(line)["provenance"] for line in done.stdout.splitlines()]
    assert len(stamps) == 3 and all(s == stamps[0] for s in stamps)
    assert stamps[0]["inputs"] == [{"path": str(path), "sha256": hashlib.sha256(rows.encode()).hexdigest()}]
    assert set(stamps[0]) == {"nlfit", "versions", "seed", "options_sha256", "inputs"}
    (tmp_path / "row.json").write_text(done.stdout.splitlines()[0])
    refused = CliRunner().invoke(app, ["refit", str(tmp_path / "row.json")])
    assert refused.exit_code == 2 and "grouped fit" in refused.stderr
    (tmp_path / "rows.ndjson").write_text(done.stdout)
    refused = CliRunner().invoke(app, ["refit", str(tmp_path / "rows.ndjson")])
    assert refused.exit_code == 2 and "refit re-runs single fits" in refused.stderr and "predict" not in refused.stderr


def test_a_result_without_provenance_is_refused(tmp_path):
    (tmp_path / "old.json").write_text(json.dumps({"params": {"a": {"value": 1.0}}}))
    refused = CliRunner().invoke(app, ["refit", str(tmp_path / "old.json")])
    assert refused.exit_code == 2 and "no provenance" in refused.stderr and "Traceback" not in refused.stderr


def test_version_comes_from_the_package_metadata():
    assert nlfit.__version__ == metadata.version("nlfit")
    names = ("python", "jax", "jaxlib", "numpy", "scipy")
    expected = ", ".join(f"{n} {metadata.version(n) if n != 'python' else sys.version.split()[0]}" for n in names)
    for command in ([str(Path(sys.executable).with_name("nlfit")), "--version"], [sys.executable, "-m", "nlfit", "--version"]):
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, env={"NLFIT_WORKER": "off", "PATH": "/usr/bin:/bin"})
        assert done.returncode == 0, done.stderr
        first, second = done.stdout.splitlines()
        assert first == f"nlfit {metadata.version('nlfit')}"
        assert second == expected


def test_refit_of_a_nist_file_uses_its_own_model_and_start(tmp_path):
    nist = Path(__file__).resolve().parents[1] / "data" / "nist" / "Misra1a.dat"
    for start in ([], ["--start", "2"]):
        saved = CliRunner().invoke(app, ["fit", str(nist), *start, "-q", "-o", str(tmp_path / "nist.json")])
        assert saved.exit_code == 0, saved.stderr
        again = CliRunner().invoke(app, ["refit", str(tmp_path / "nist.json"), "-q"])
        assert again.exit_code == 0, again.stderr
        assert json.loads(again.stdout)["agree"]


def test_refit_checks_the_hash_before_parsing_and_never_writes_over_the_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = _runge(tmp_path / "runge.csv")
    assert CliRunner().invoke(app, ["fit", "runge.csv", "-m", "rational", "-q", "-o", "fit.json"]).exit_code == 0
    over = CliRunner().invoke(app, ["refit", "fit.json", "-o", "runge.csv"])
    assert over.exit_code == 2 and "would overwrite the input" in over.stderr
    assert hashlib.sha256(data.read_bytes()).hexdigest() == json.loads((tmp_path / "fit.json").read_text())["provenance"]["inputs"][0]["sha256"]
    data.write_text("garbage\n")  # no longer CSV at all: the hash speaks, not the parser
    refused = CliRunner().invoke(app, ["refit", "fit.json"])
    assert refused.exit_code == 2 and "runge.csv changed since the fit" in refused.stderr
    payload = json.loads((tmp_path / "fit.json").read_text())
    payload["provenance"]["options"]["sep"] = 5  # an edited result: one line, exit 2
    (tmp_path / "edited.json").write_text(json.dumps(payload))
    edited = CliRunner().invoke(app, ["refit", "edited.json"])
    assert edited.exit_code == 2 and edited.stderr.count("\n") == 1 and "Traceback" not in edited.stderr
