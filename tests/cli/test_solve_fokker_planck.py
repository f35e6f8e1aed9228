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


def test_cli_warnings_are_one_line_and_a_too_narrow_start_says_why(tmp_path, capfd):
    """A warning reads like the errors, one line (Python's default added the library's source line), and a Gaussian
    narrower than a cell with no cell centre near it names the fix."""
    import sys
    import warnings

    from hhld.cli._common import run_app

    with warnings.catch_warnings():  # shown as `hhld` shows them (pytest records them instead)
        warnings.simplefilter("always")
        warnings.showwarning = lambda m, c, f, n, file=None, line=None: sys.stderr.write(  # Python's default
            warnings.formatwarning(m, c, f, n, line))
        code = run_app(app, ["solve", "fokker-planck", "--width", "0.001", "-n", "16", "--no-animate", "--t-end",
                             "0.1", "-q", "-o", str(tmp_path / "x")])
    err = capfd.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert lines[0].startswith("warning: grid barely resolves the Gibbs density") and \
        lines[0].endswith("(GridResolutionWarning)")
    assert lines[1].startswith("error: the Gaussian at") and "below the cell size [0.25, 0.25]" in lines[1]
    assert len(lines) == 2 and "fp = FokkerPlanck" not in err
    assert warnings.formatwarning.__name__ == "formatwarning"  # restored after the command


def test_cli_flat_start_at_small_D_runs(tmp_path):
    """`--width 100` (a flat start) at D = 0.05 on 128^2 cells: CRAM's step had a negative entry of -1.2e-10 of the
    largest, beyond round-off, and the KL refused it (the command failed); auto now moves on to the contour rule."""
    out = tmp_path / "flat"
    res = CliRunner().invoke(app, ["solve", "fokker-planck", "--width", "100", "--t-end", "0.5", "--snapshots", "2",
                                   "--k", "0", "--no-animate", "-q", "--out", str(out)])
    assert res.exit_code == 0, res.output
    data = np.load(out / "results.npz")
    assert data["snapshots"].min() > -1e-10 * data["snapshots"].max() and np.all(np.isfinite(data["kl"]))
