"""The ``hhld`` command line: ``hhld demo``, ``hhld solve ...``, ``hhld validate``.

Each sub-command lives in its own module and registers itself here.
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


def main() -> None:  # console-script entry point
    app()
