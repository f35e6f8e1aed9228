"""Which kind of backward pass is running: does it accumulate into the parameters' ``.grad``, and does it
build a graph of its own (``create_graph=True``)?

The monitor counts a forward's samples, and the per-sample engine reads a layer's output gradient, only in
a backward pass that writes the gradients ``optimizer.step()`` applies. A ``torch.autograd.grad`` call
(a saliency map, the first pass of a gradient penalty, a physics-informed loss's derivatives) runs the same
hooks but writes no ``.grad``; counting or consuming it would mix another function's gradients into the
step. A pass with ``create_graph=True`` makes the later gradient hold terms through the backward graph
itself (a gradient penalty's second-order terms), which no forward-op factor describes.

Both answers come from inside a hook of the running pass: :class:`AccumulationProbe` asks the autograd
engine whether it will execute the parameters' ``AccumulateGrad`` nodes (``torch.autograd.grad`` answers
that it runs no leaf node, which is the same answer), and :func:`builds_graph` reads the grad mode the
engine runs the pass under (``create_graph``).
"""
from __future__ import annotations

import torch

__all__ = ["AccumulationProbe", "builds_graph", "inside_transform"]


def inside_transform() -> bool:
    """Whether a ``torch.func`` transform (``grad``, ``vmap``, ``jvp``, ...) is running: the forward and backward
    passes inside one (a user's own per-sample gradients, a functorch DP-SGD step, an influence computation) are
    that function's, with its own ``create_graph`` and batching, never the step's ``loss.backward()``."""
    try:
        return torch._C._functorch.peek_interpreter_stack() is not None
    except Exception:  # noqa: BLE001 - a torch without the accessor: no transform is seen
        return False


def builds_graph() -> bool:
    """Inside a backward hook: whether the running pass has ``create_graph=True``."""
    return torch.is_grad_enabled()


class AccumulationProbe:
    """``probe()`` inside a backward hook: whether the running pass accumulates into the ``.grad`` of at least
    one of ``params`` (``loss.backward()``: yes; ``torch.autograd.grad(...)``: no; ``backward(inputs=...)``:
    when one of them is among the inputs). The answer is computed once per pass (graph task)."""

    def __init__(self, params):
        # frozen ones too: a parameter unfrozen later (its node is looked up when the pass runs)
        self._params = [p for p in params if isinstance(p, torch.Tensor) and p.is_leaf]
        self._nodes: list = [None] * len(self._params)  # cached AccumulateGrad nodes, refreshed when stale
        self._task = None
        self._answer = True

    @staticmethod
    def _node(p):
        """``p``'s current ``AccumulateGrad`` node (``p.data = ...``, as ``model.to()`` does, gives the parameter a
        new one: a cached node that the pass does not run is checked against it)."""
        with torch.enable_grad():
            fn = p.view_as(p).grad_fn
        return fn.next_functions[0][0] if fn is not None and fn.next_functions else None

    @property
    def task(self):
        """The id of the backward pass (graph task) the last call was made in."""
        return self._task

    def __call__(self) -> bool:
        try:
            task = torch._C._current_graph_task_id()
        except Exception:  # noqa: BLE001 - a torch without it: every pass counts, as before
            self._task = None
            return True
        if task == self._task and task >= 0:
            return self._answer
        try:
            answer = True
            for k, p in enumerate(self._params):
                node = self._nodes[k]
                answer = node is not None and torch._C._will_engine_execute_node(node)
                if not answer:  # not in this pass, or a stale node: ask again with the parameter's current one
                    fresh = self._node(p)
                    if fresh is not node:
                        self._nodes[k] = fresh
                        answer = fresh is not None and torch._C._will_engine_execute_node(fresh)
                if answer:
                    break
        except RuntimeError as exc:
            # torch.autograd.grad(): the engine executes no AccumulateGrad node (it says so for leaves); any
            # other refusal: unknown, counted as before
            answer = "autograd.grad" not in str(exc)
        except Exception:  # noqa: BLE001
            answer = True
        self._task, self._answer = task, answer
        return answer
