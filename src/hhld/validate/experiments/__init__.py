"""Experiments of ``hhld validate``; each module registers itself with ``@register``."""
from __future__ import annotations

import importlib
import pkgutil
import warnings

_LOADED = False


def load_all() -> None:
    """Import every module of this package (each registers its experiment)."""
    global _LOADED
    if _LOADED:
        return
    for mod in sorted(m.name for m in pkgutil.iter_modules(__path__)):
        if mod.startswith("_"):
            continue
        try:
            importlib.import_module(f"{__name__}.{mod}")
        except Exception as exc:  # one broken experiment must not hide the others
            warnings.warn(f"hhld.validate: could not import experiment module {mod!r}: {exc!r}")
    _LOADED = True
