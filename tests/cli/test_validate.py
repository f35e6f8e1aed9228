from types import SimpleNamespace


def test_missing_package_gives_the_install_command():
    from hhld.cli.validate import _PIP_NAMES, _missing_modules

    tb = "Traceback (most recent call last):\n  ...\nModuleNotFoundError: No module named 'sklearn.datasets'"
    run = SimpleNamespace(errors=[None, tb, tb], summarize_error=None)
    assert _missing_modules(run) == ["sklearn", "sklearn"]
    assert _PIP_NAMES["sklearn"] == "scikit-learn"
    assert _missing_modules(SimpleNamespace(errors=[None], summarize_error=None)) == []
