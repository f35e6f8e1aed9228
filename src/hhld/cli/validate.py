"""``hhld validate`` (filled in by the validation issue)."""
from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the validate command."""
