"""The monitor examples run headless as subprocesses within their time limit."""
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("script,args", [
    ("monitor_digits_mlp.py", ["--epochs", "2"]),
    ("monitor_transformer.py", ["--steps", "40"]),
])
def test_example_runs(script, args, tmp_path):
    pytest.importorskip("sklearn")
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONPATH=str(ROOT / "src"))
    p = subprocess.run([sys.executable, str(ROOT / "examples" / script), *args], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "regime" in p.stdout
