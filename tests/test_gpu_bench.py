"""benchmarks/gpu.py runs headless on a machine without CUDA (``--smoke``: the same code at tiny sizes on
the CPU), so the GPU measurements of issue 13 cannot rot. No figure is asserted (the run is a smoke run)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu.py"


@pytest.mark.slow
def test_gpu_benchmark_smoke_run_prints_one_table(tmp_path):
    out, table = tmp_path / "gpu.json", tmp_path / "gpu.md"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--json", str(out), "--out", str(table)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT, env={**__import__("os").environ,
                                                                                      "MPLBACKEND": "Agg"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    text = table.read_text()
    assert text.startswith("**Device:**") and "SMOKE RUN" in text and res["device"] in text
    assert text.count("| measurement |") == 1  # one table
    # every part ran and produced its figures (no part reports an error)
    assert len(res["ensemble"]) == 2 and all("error" not in r and r["hhld"] > 0 and r["bound"] > 0
                                             for r in res["ensemble"])
    assert "error" not in res["monitor"] and res["monitor"]["ratio"] > 0
    assert "error" not in res["grokking"] and res["grokking"]["epochs_run"] == 3
    assert res["quick_suite"]["status"] == "ok", res["quick_suite"]
    for row in ("bandwidth bound", "plain in-place torch", "monitor overhead", "grokking transformer",
                "validation suite --quick"):
        assert row in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA machine runs the full benchmark")
def test_without_cuda_the_full_run_refuses_in_one_line():
    proc = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: no CUDA device; run with --smoke for the CPU smoke run"]
