"""The ``hhld`` command line: ``hhld demo``, ``hhld solve ...``, ``hhld validate``.

Each sub-command lives in its own module and registers itself here. Errors never show a
traceback: one line on stderr, exit status 2 for bad input (:mod:`hhld.cli._common`).
"""
from __future__ import annotations

import typer

app = typer.Typer(
    name="hhld",
    help=(
        "Heisenberg Harmonic Learning Dynamics: simulate Langevin / Fokker-Planck / "
        "Schrodinger dynamics on loss landscapes, monitor real training, and re-measure "
        "every claim of the HHLD documents."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    from . import demo, solve, validate  # noqa: F401  (each module adds its commands)

    demo.register(app)
    solve.register(app)
    validate.register(app)


_register()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: errors print one line (exit 2 for bad input), never a traceback
    (see :mod:`hhld.cli._common`)."""
    import os
    import sys

    from ._common import run_app

    try:
        code = run_app(app, argv)
    except KeyboardInterrupt:
        code = 130
    except Exception as exc:  # noqa: BLE001 - last resort: the error path itself failed
        if os.environ.get("HHLD_TRACEBACK"):
            raise
        sys.stderr.write(f"error: internal error ({type(exc).__name__}); HHLD_TRACEBACK=1 shows the traceback\n")
        code = 1
    sys.exit(code)
