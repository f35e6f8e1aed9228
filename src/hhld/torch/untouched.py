"""Forward passes that leave no trace on training: :func:`untouched`.

An evaluation beside training -- the monitor's tier 2 and probe, :func:`hhld.torch.noise.gradient_noise_stats`,
the Hessian-vector products of :mod:`hhld.torch.hessian`, an LR range test -- runs the model's forward in the mode
training left it in. In train mode that forward updates BatchNorm's running statistics (and
``num_batches_tracked``), and dropout draws its masks from the global random generator, so without care the
evaluation changes the model and every later dropout mask: a monitored run would train differently from the same
run unmonitored. Inside :func:`untouched` the model's buffers are restored on exit and the global generators (the
CPU one and those of the CUDA devices the model lives on) are forked.
"""
from __future__ import annotations

import contextlib
import itertools

import torch
from torch import nn

__all__ = ["untouched"]


@contextlib.contextmanager
def untouched(model: nn.Module):
    """Within this context the model's buffers may change and random numbers may be drawn; on exit the buffers hold
    their values from before (the same tensor objects, also where a module replaced one) and the global random
    generators are where they were."""
    saved = [(mod, name, buf, buf.detach().clone()) for mod in model.modules()
             for name, buf in mod._buffers.items() if buf is not None]
    cuda = sorted({t.device.index if t.device.index is not None else torch.cuda.current_device()
                   for t in itertools.chain(model.parameters(), model.buffers()) if t.device.type == "cuda"})
    try:
        with torch.random.fork_rng(devices=cuda):
            yield
    finally:
        for mod, name, buf, copy in saved:
            # through .data: the values come back without a new version of the tensor, so that a graph built inside
            # (make_hvp's, whose Hessian-vector products run after this context) keeps its saved buffers valid
            # (train-mode BatchNorm saves its running statistics; its backward does not read them)
            buf.data.copy_(copy)
            mod._buffers[name] = buf
