"""Every row of the shared bad-input table (tests/error_inputs.py) and of its command-line table.

A row passes when the call raises the expected type with a message matching the row's fragment
(a warning row: the warning is raised as an error); a CLI row when the command exits with the
expected status and prints exactly one line ``error: ...`` on stderr, no traceback.
"""
from __future__ import annotations

import importlib.util
import os
import pathlib
import re
import subprocess
import sys
import warnings

import pytest

_spec = importlib.util.spec_from_file_location("error_inputs", pathlib.Path(__file__).with_name("error_inputs.py"))
T = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("error_inputs", T)  # dataclasses look their module up there
_spec.loader.exec_module(T)

ROWS = [pytest.param(row, id=f"{area}:{row.name()}") for area, rows in T.AREAS.items() for row in rows]


def test_table_has_every_area_and_no_empty_fragment():
    assert {"fokker_planck", "quantum", "landscapes", "dynamics", "observables", "validate", "documents_api",
            "optim", "monitor"} <= set(T.AREAS)
    for area, rows in T.AREAS.items():
        for row in rows:
            assert row.match, f"{area}: {row.name()} has no message fragment"
    assert len({p.id for p in ROWS}) == len(ROWS), "row ids must be unique"


@pytest.mark.parametrize("row", ROWS)
def test_error_input(row):
    is_warning = isinstance(row.error, type) and issubclass(row.error, Warning)
    with warnings.catch_warnings():
        warnings.simplefilter("error" if is_warning else "ignore")
        fn, args, kwargs = row.resolve()
        with pytest.raises(row.error) as info:
            fn(*args, **kwargs)
    message = str(info.value)
    assert re.search(row.match, message), f"message {message!r} does not match {row.match!r}"
    assert "\n" not in message.strip() or len(message) < 2000


def _argv(row, tmp_path):
    afile = tmp_path / "a-file"
    afile.write_text("")
    return [a.replace("{file}", str(afile)).replace("{tmp}", str(tmp_path / "out")) for a in row.argv]


@pytest.mark.parametrize("row", [pytest.param(r, id=r.name()) for r in T.CLI])
def test_cli_error_input(row, tmp_path, capsys):
    from hhld.cli import app
    from hhld.cli._common import run_app

    code = run_app(app, _argv(row, tmp_path))
    out, err = capsys.readouterr()
    assert code == row.code, (out, err)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in out + err
    assert re.search(row.match, lines[0]), f"{lines[0]!r} does not match {row.match!r}"


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write into a read-only directory")
def test_cli_read_only_out_dir(tmp_path, capsys):
    from hhld.cli import app
    from hhld.cli._common import run_app

    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    assert run_app(app, ["demo", "--example", "1", "--out", str(ro / "sub")]) == 2
    assert "cannot create" in capsys.readouterr().err


def test_the_executable_gives_one_line_and_exit_2(tmp_path):
    """The hook's commands, through the real entry point in a fresh process."""
    afile = tmp_path / "a-file"
    afile.write_text("")
    env = dict(os.environ, MPLBACKEND="Agg")
    for argv in (["demo", "--example", "9"], ["solve", "schrodinger", "--hbar", "0"],
                 ["solve", "schrodinger", "--t-end", "1e9"], ["solve", "fokker-planck", "--cells", "100000"],
                 ["validate", "--quick", "--only", "nosuch", "--out", str(afile)]):
        r = subprocess.run([sys.executable, "-m", "hhld.cli", *argv], capture_output=True, text=True, env=env,
                           timeout=120, cwd=tmp_path)
        assert r.returncode == 2, (argv, r.stdout, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("error: "), (argv, r.stderr)
        assert "Traceback" not in r.stdout + r.stderr
