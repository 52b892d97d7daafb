"""SIGINT and SIGTERM at evenly spaced moments of a real ``nlfit fit`` run: a tally.

    python benchmarks/signals.py [--moments 20] [--first 0.05]

First one undisturbed run measures how long the command takes (T). Then, for each signal,
the command is started again and the signal sent at ``--moments`` times evenly spaced from
``--first`` seconds to T (imports, compilation, the fit, the report and the write all get
hit). Each run must end with either

- exit 130 (SIGINT) or 143 (SIGTERM), ``nlfit: interrupted``/``terminated`` on stderr, and an
  output file that is absent or a complete JSON result; or
- exit 0 or 1 with a complete JSON result (the signal came after the work was done);

and never with a traceback, "Exception ignored", a hang (120 s), or a temporary file left
in the output folder. The script prints one line per run and the tally; exit 1 on any
failure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NLFIT = [sys.executable, "-m", "nlfit"]
EXPECTED = {signal.SIGINT: (130, "nlfit: interrupted"), signal.SIGTERM: (143, "nlfit: terminated")}


def command(folder: Path) -> list[str]:
    return [*NLFIT, "fit", str(folder / "data.csv"), "-m", "rational", "--method", "lm", "-o", str(folder / "out" / "fit.json")]


def judge(process: subprocess.Popen, err: str, folder: Path, signum: int) -> str:
    """'' when the run ended well, else what went wrong."""
    output = folder / "out" / "fit.json"
    left = sorted(p.name for p in (folder / "out").iterdir() if p.name != "fit.json")
    if left:
        return f"left files behind: {left}"
    if "Traceback" in err or "Exception ignored" in err or "internal error" in err:
        return "traceback: " + err.strip().splitlines()[-1]
    complete = False
    if output.exists():
        try:
            complete = "status" in json.loads(output.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return "the output file is not complete JSON"
    code, message = EXPECTED[signum]
    if process.returncode == code:
        if err.count(message) != 1:
            return f"exit {code} without one '{message}' line: {err.strip()[-200:]!r}"
        return ""
    if process.returncode in (0, 1) and complete:
        return ""
    return f"exit {process.returncode}, output {'complete' if complete else 'absent'}: {err.strip()[-200:]!r}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moments", type=int, default=20)
    parser.add_argument("--first", type=float, default=0.05)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="nlfit-signals-"))
    env = {**os.environ, "NLFIT_CACHE_DIR": str(folder / "cache"), "NLFIT_WORKER": "off"}
    data = subprocess.run([*NLFIT, "generate", "runge", "--noise", "0.5", "--seed", "0"], capture_output=True, text=True, check=True, env=env)
    (folder / "data.csv").write_text(data.stdout)
    (folder / "out").mkdir()
    subprocess.run(command(folder), env=env, capture_output=True, check=False)  # fills the compile cache
    began = time.perf_counter()
    subprocess.run(command(folder), env=env, capture_output=True, check=False)
    total = time.perf_counter() - began
    print(f"undisturbed run: {total:.2f} s; signals at {args.moments} moments from {args.first} s to {total:.2f} s")
    tally = {}
    failures = 0
    for signum in (signal.SIGINT, signal.SIGTERM):
        name = signal.Signals(signum).name
        for i in range(args.moments):
            moment = args.first + (total - args.first) * i / max(args.moments - 1, 1)
            shutil.rmtree(folder / "out")
            (folder / "out").mkdir()
            process = subprocess.Popen(command(folder), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            time.sleep(moment)
            process.send_signal(signum)
            try:
                _, err = process.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                process.kill()
                _, err = process.communicate()
                verdict = "hang (no exit within 120 s)"
            else:
                verdict = judge(process, err, folder, signum)
            outcome = f"exit {process.returncode}"
            tally[(name, outcome, "ok" if not verdict else "FAIL")] = tally.get((name, outcome, "ok" if not verdict else "FAIL"), 0) + 1
            failures += bool(verdict)
            print(f"{name:7} at {moment:6.2f} s: {outcome:8} {'ok' if not verdict else 'FAIL: ' + verdict}")
    print("\ntally:")
    for (name, outcome, verdict), count in sorted(tally.items()):
        print(f"  {name:7} {outcome:8} {verdict:4} {count}")
    shutil.rmtree(folder, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
