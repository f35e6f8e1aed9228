import json

import numpy as np
from typer.testing import CliRunner

from hhld.cli import app


def test_cli_fokker_planck_writes_results(tmp_path):
    out = tmp_path / "fp"
    res = CliRunner().invoke(app, ["solve", "fokker-planck", "-l", "double_well_1d", "--cells", "80",
                                   "--D", "0.2", "--t-end", "1", "--snapshots", "4", "--center", "0.8",
                                   "--k", "3", "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    s = json.loads((out / "summary.json").read_text())
    assert s["max_mass_error"] < 1e-12 and len(s["rates"]) == 3
    data = np.load(out / "results.npz")
    assert data["snapshots"].shape == (5, 80)
    assert np.all(np.diff(data["kl"]) < 0)
    for f in ("density_snapshots.png", "spectrum.png", "kl.png"):
        assert (out / f).stat().st_size > 0
    assert (out / "density.gif").exists() or (out / "frames").is_dir()


def test_cli_bad_D_is_a_clear_error(tmp_path):
    res = CliRunner().invoke(app, ["solve", "fokker-planck", "--D", "-1", "--out", str(tmp_path / "x"), "-q"])
    assert res.exit_code == 2
    assert "D" in res.output and "> 0" in res.output
