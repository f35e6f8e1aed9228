"""The core example scripts and the CLI run headless with a timeout."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, MPLBACKEND="Agg")


@pytest.mark.parametrize("script,args", [("ensemble_double_well.py", ["--quick"]), ("documents_api.py", [])])
def test_example_runs(tmp_path, script, args):
    extra = ["--out", str(tmp_path)] if "--quick" in args else []
    r = subprocess.run([sys.executable, str(ROOT / "examples" / script), *args, *extra], cwd=tmp_path, env=ENV,
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()


def test_cli_help_explains_options():
    r = subprocess.run([sys.executable, "-m", "hhld.cli", "--help"], capture_output=True, text=True, env=ENV, timeout=120)
    assert r.returncode == 0 and "demo" in r.stdout
    r = subprocess.run([sys.executable, "-m", "hhld.cli", "demo", "--help"], capture_output=True, text=True, env=ENV,
                       timeout=120)
    for opt in ("--example", "--out", "--seed", "--quiet", "--quick"):
        assert opt in r.stdout


def test_demo_writes_figures_and_summary(tmp_path):
    r = subprocess.run([sys.executable, "-m", "hhld.cli", "demo", "--quick", "--out", str(tmp_path), "-e", "1",
                        "-e", "2", "-e", "4"], capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "Transitions detected" in r.stdout and "Linear fit: log(P) = 0.000/√D" in r.stdout
    for f in ("heisenberg_double_well.png", "heisenberg_highdim.png", "heisenberg_tunneling_rate.png"):
        assert (tmp_path / f).stat().st_size > 10_000
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["seed"] == 0 and set(summary["examples"]) == {"1", "2", "4"}
