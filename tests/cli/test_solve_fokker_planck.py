"""`hhld solve fokker-planck`: estimates, the separate compute / save / figure steps, the command."""
import json

import numpy as np
from typer.testing import CliRunner

from hhld.cli import app
from hhld.cli.solve_fokker_planck import estimate, size_bounds
from hhld.landscapes import get_landscape


def test_estimates_scale_with_the_grid_and_bound_what_was_measured():
    land = get_landscape("double_well_2d")
    small = estimate(land, land.box, 100, 0.05, 1.0, 5.0, 20, 6)
    big = estimate(land, land.box, 400, 0.05, 1.0, 5.0, 20, 6)
    # measured on the 2-core machine (2026-12): 100^2 cells 5.8 s and 156 MB, 400^2 cells 26 s and 444 MB
    assert 150e6 < small["bytes"] < 600e6 and 2 < small["seconds"] < 30
    assert 400e6 < big["bytes"] < 2e9 and 10 < big["seconds"] < 150
    b = size_bounds(2, 100_000, 20)
    assert b["cells"] == 1e10 and b["lu_nnz"] > 2 ** 31 and b["bytes"] > 1e13


def test_compute_save_and_figures_are_separate_steps(tmp_path):
    """check_request -> compute -> save -> figures, each usable alone (the command composes them)."""
    import json

    import pytest
    import typer

    from hhld.cli import solve_fokker_planck as sfp

    req = sfp.check_request("double_well_1d", cells=48, box=None, D=0.3, mu=1.0, t_end=0.2, snapshots=2,
                            center="0.5", width=0.2, seed=0, k=3, method="auto")
    sol = sfp.compute(req)
    assert sol.snaps.shape == (3, 48) and len(sol.kl) == 3 and sol.spec.rates.shape == (3,)
    assert abs(sol.masses[-1] - 1) < 1e-10 and sol.kl[-1] < sol.kl[0]
    summary = sfp.save(req, sol, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.npz", "summary.json"]  # no figure yet
    assert json.loads((tmp_path / "summary.json").read_text())["kl_final"] == summary["kl_final"]
    sfp.figures(sol, tmp_path, summary, animate=False)
    assert {"density_snapshots.png", "spectrum.png", "kl.png"} <= {p.name for p in tmp_path.iterdir()}
    assert json.loads((tmp_path / "summary.json").read_text())["animation"] is None
    with pytest.raises(typer.BadParameter, match="outside the box"):
        sfp.check_request("double_well_1d", cells=48, box=None, D=0.3, mu=1.0, t_end=0.2, snapshots=2,
                          center="5", width=0.2, seed=0, k=3, method="auto")


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
