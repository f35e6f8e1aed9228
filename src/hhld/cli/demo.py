"""``hhld demo``: the documents' Examples 1-4 with their console summaries and figures."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ._common import check_out_dir, cli_errors

#: the documents' examples (``hhld.demo.EXAMPLES``; checked here without importing the demo)
EXAMPLE_NUMBERS = (1, 2, 3, 4)


@cli_errors
def demo(
    example: Optional[List[int]] = typer.Option(
        None, "--example", "-e",
        help="Example to run (1: double well, 2: high-dimensional quadratic, "
        "3: uncertainty principle, 4: tunneling rate vs temperature). Repeat for several; default: all."),
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Directory for the figures and summary.json."),
    seed: int = typer.Option(0, "--seed", help="Seed (>= 0) of the random generator (runs are reproducible)."),
    quick: bool = typer.Option(False, "--quick", help="Smaller ensembles for Examples 3 and 4 (seconds)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing (for scripts); files are still written."),
) -> None:
    """Reproduce the documents' Examples 1-4: the same console summaries and figures, and, for
    Examples 3 and 4, the measured counterparts (uncertainty product of an ensemble produced
    by the dynamics; measured escape rates and Kramers' rate beside the documents' formula)."""
    for n in example or ():
        if n not in EXAMPLE_NUMBERS:
            raise typer.BadParameter(f"got {n}; choose from {', '.join(map(str, EXAMPLE_NUMBERS))}",
                                     param_hint="'--example'")
    if seed < 0:
        raise typer.BadParameter(f"got {seed}; a seed must be >= 0", param_hint="'--seed'")
    check_out_dir(out)
    from ..demo import run_demo

    run_demo(out=out, examples=tuple(example) if example else (1, 2, 3, 4), seed=seed, quiet=quiet, quick=quick)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
