"""``hhld solve fokker-planck`` and ``hhld solve schrodinger``."""
from __future__ import annotations

import typer

solve_app = typer.Typer(help="Grid solvers: the master equation (Fokker-Planck) and the Schrodinger equation.",
                        no_args_is_help=True)


def register(app: typer.Typer) -> None:
    from . import solve_fokker_planck, solve_schrodinger

    solve_fokker_planck.register(solve_app)
    solve_schrodinger.register(solve_app)
    app.add_typer(solve_app, name="solve")
