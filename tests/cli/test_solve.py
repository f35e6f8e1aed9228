"""`hhld solve`: the group registers both grid solvers and refuses an unknown one."""
from typer.testing import CliRunner

from hhld.cli import app


def test_solve_group_lists_both_solvers():
    res = CliRunner().invoke(app, ["solve", "--help"])
    assert res.exit_code == 0
    assert "fokker-planck" in res.output and "schrodinger" in res.output


def test_unknown_solver_is_a_usage_error_naming_it():
    res = CliRunner().invoke(app, ["solve", "heat"])
    assert res.exit_code == 2 and "No such command 'heat'" in res.output
