from types import SimpleNamespace


def test_missing_package_gives_the_install_command():
    from hhld.cli.validate import _PIP_NAMES, _missing_modules

    tb = "Traceback (most recent call last):\n  ...\nModuleNotFoundError: No module named 'sklearn.datasets'"
    run = SimpleNamespace(errors=[None, tb, tb], summarize_error=None)
    assert _missing_modules(run) == ["sklearn", "sklearn"]
    assert _PIP_NAMES["sklearn"] == "scikit-learn"
    assert _missing_modules(SimpleNamespace(errors=[None], summarize_error=None)) == []


def test_validate_takes_q_for_quiet_like_the_other_commands():
    from typer.testing import CliRunner

    from hhld.cli import app

    res = CliRunner().invoke(app, ["validate", "--only", "nonexistent", "-q"])
    assert res.exit_code == 2 and "unknown experiment" in res.output and "No such option" not in res.output
