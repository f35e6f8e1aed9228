"""Exact per-sample squared gradient norms of any PyTorch model (see :mod:`.engine`).

* :mod:`.factors` -- per-sample gradient contributions and their squared norms (Gram / formed);
* :mod:`.rules` -- the contributions of the functional ops that carry parameters;
* :mod:`.rnn` -- exact per-sample gradients of the fused recurrent layers;
* :mod:`.sketch` -- the random-projection estimator of convolution norms;
* :mod:`.engine` -- :class:`PerSampleSqNorms`: the forward-pass interception, batch axis, couplings.
"""
from .engine import BatchAxisError, PerSampleSqNorms, declared_batch_first
from .factors import Dense, Outer, SqNorm, per_sample_sq_norms

__all__ = ["PerSampleSqNorms", "BatchAxisError", "declared_batch_first", "Outer", "Dense", "SqNorm",
           "per_sample_sq_norms"]
