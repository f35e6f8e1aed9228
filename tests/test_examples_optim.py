"""Runs examples/heisenberg_sgd_digits.py headless, with a timeout."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sklearn")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "heisenberg_sgd_digits.py"


def test_heisenberg_sgd_digits_example_runs():
    env = dict(os.environ, MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, str(EXAMPLE), "--steps", "250", "--seed", "0"], capture_output=True,
                          text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "controller events" in out and "explore" in out
    assert "eta_opt" in out and "LR range test" in out
    acc = float(out.split("test accuracy ")[1].split(";")[0])
    assert acc > 0.85
