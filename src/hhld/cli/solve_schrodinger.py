"""CLI command module (registered by hhld.cli.solve)."""
from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's command to the `hhld solve` group (filled in by its issue)."""
