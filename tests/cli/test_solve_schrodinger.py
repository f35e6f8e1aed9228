"""`hhld solve schrodinger`: the files it writes, and --eta without --D refused."""
import json

import numpy as np
from typer.testing import CliRunner

from hhld.cli import app


def test_solve_schrodinger_writes_results(tmp_path):
    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["solve", "schrodinger", "--out", str(out), "-n", "128", "--t-end", "0.5",
                                 "--snapshots", "4", "--eigen", "2", "--eta", "1", "--D", "0.09",
                                 "--no-animate", "--quiet"])
    assert r.exit_code == 0, r.output
    s = json.loads((out / "summary.json").read_text())
    assert abs(s["hbar"] - 0.3) < 1e-15
    assert s["max_norm_error"] < 1e-12
    assert len(s["eigenvalues"]) == 2 and s["eigenvalues"][0] < s["eigenvalues"][1]
    d = np.load(out / "schrodinger.npz")
    assert d["snapshots"].shape == (5, 128)  # --snapshots counts the states after t = 0
    for f in ("density_snapshots.png", "spectrum.png", "norm_energy.png"):
        assert (out / f).exists()


def test_solve_schrodinger_rejects_half_eta_D(tmp_path):
    r = CliRunner().invoke(app, ["solve", "schrodinger", "--out", str(tmp_path), "--eta", "1", "--quiet"])
    assert r.exit_code == 2 and "--eta and --D go together" in r.output
