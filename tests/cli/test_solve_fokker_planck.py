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
