"""The ensemble benchmark runs (quick mode) and prints its ratio lines. No wall-time assertions
(the kernels' numbers are checked against the reference steps in tests/dynamics/test_kernels.py)."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_ensemble.py"
HAVE_JAX = importlib.util.find_spec("jax") is not None and importlib.util.find_spec("blackjax") is not None


@pytest.mark.slow
def test_bench_quick_runs_and_prints_ratios(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(SCRIPT), "--quick", "--threads", "1", "--no-inductor", "--json", str(out)]
    if not HAVE_JAX:
        cmd.append("--no-jax")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stdout
    assert "ratio hhld vs documents' loop:" in text
    assert "ratio hhld vs BlackJAX SGLD:" in text
    assert "ratio hhld vs RNG bound:" in text
    assert "ratio every built-in landscape and integrator vs RNG bound" in text
    assert "ratio user_closed_em vs RNG bound" in text and "load average" in text
    data = json.loads(out.read_text())
    assert set(data["ratios"]) == {"hhld_vs_docs_loop", "hhld_vs_blackjax_sgld", "hhld_vs_rng_bound"}
    for key in ("docs_loop", "numpy32", "torch_inplace", "torch_rng", "hhld_sim_torch32", "rng_matrix"):
        assert data["results"][key]["best"] > 0
    # every built-in landscape x integrator, fused and reference
    for land in ("dw2", "dw10", "tilted2", "quartic4", "aq50", "quad8"):
        for integ in ("em", "lm", "baoab"):
            for variant in ("fused", "reference"):
                assert data["matrix_ratios"][f"{land}_{integ}_{variant}"]["cpu_best"] > 0
    assert data["ratios"]["hhld_vs_docs_loop"]["value"] > 0
    if HAVE_JAX:
        assert data["results"]["blackjax_sgld"]["best"] > 0
        assert data["results"]["jax_scan"]["best"] > 0
