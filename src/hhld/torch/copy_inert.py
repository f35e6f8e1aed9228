"""Hooks that a copy of the module (or optimizer) does not carry along.

``copy.deepcopy(model)`` (keeping the best model, an EMA or ``AveragedModel``, Lightning's SWA) and
``torch.save(model, f)`` copy a module's hooks with it. A hook that is a bound method of the monitor would drag the
whole monitor into the copy: its autograd nodes cannot be copied (``TypeError: cannot pickle 'AccumulateGrad'
object``, from the first step on), and before that the copy silently got a second monitor of its own.
:class:`CopyInert` wraps such a hook: it calls it, and every copy of it (deep copy, pickle) is :data:`NOOP`, a hook
that does nothing.
"""
from __future__ import annotations

__all__ = ["CopyInert", "NOOP"]


class _Noop:
    """A hook that does nothing (what a copy of a :class:`CopyInert` hook is)."""

    __slots__ = ()

    def __call__(self, *args, **kwargs):
        return None

    def __repr__(self) -> str:
        return "hhld.torch.copy_inert.NOOP"

    def __reduce__(self):
        return (_noop, ())


#: the hook a copy of a :class:`CopyInert` hook becomes
NOOP = _Noop()


def _noop():
    """:data:`NOOP` (what unpickling a copied hook gives)."""
    return NOOP


class CopyInert:
    """``fn`` as a hook, left behind by copies: ``copy.deepcopy`` and pickling give :data:`NOOP`."""

    __slots__ = ("fn",)

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)

    def __deepcopy__(self, memo):
        return NOOP

    def __copy__(self):
        return NOOP

    def __reduce__(self):
        return (_noop, ())
