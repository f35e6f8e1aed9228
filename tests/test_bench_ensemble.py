"""The ensemble benchmark runs (quick mode) and prints its ratio lines; the fast paths
it measures keep the library's contracts. No wall-time assertions."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hhld.dynamics.integrators import _CPU_CHUNK_ELEMENTS, euler_maruyama, init_overdamped
from hhld.landscapes import DoubleWell, double_well_2d

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_ensemble.py"
HAVE_JAX = importlib.util.find_spec("jax") is not None and importlib.util.find_spec("blackjax") is not None


def test_bench_quick_runs_and_prints_ratios(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(SCRIPT), "--quick", "--json", str(out)]
    if not HAVE_JAX:
        cmd.append("--no-jax")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stdout
    assert "ratio hhld vs documents' loop:" in text
    assert "ratio hhld vs BlackJAX SGLD:" in text
    assert "ratio hhld vs RNG bound:" in text
    data = json.loads(out.read_text())
    assert set(data["ratios"]) == {"hhld_vs_docs_loop", "hhld_vs_blackjax_sgld", "hhld_vs_rng_bound"}
    for key in ("docs_loop", "numpy32", "torch_inplace", "torch_rng", "hhld_em_torch32", "hhld_sim_torch32"):
        assert data["results"][key]["best"] > 0
    assert data["ratios"]["hhld_vs_docs_loop"]["value"] > 0
    if HAVE_JAX:
        assert data["results"]["blackjax_sgld"]["best"] > 0
        assert data["results"]["jax_scan"]["best"] > 0


# ---------------------------------------------------- fast-path contracts
N_BIG = _CPU_CHUNK_ELEMENTS  # rows: 2 * N_BIG elements, several chunks plus a remainder


@pytest.mark.parametrize("backend", ["torch32", "torch64", "numpy32", "numpy64"])
def test_chunked_step_keeps_input_dtype_and_formula(backend):
    lw = double_well_2d()
    gen = np.random.default_rng(3)
    x0 = gen.normal(size=(N_BIG + 7, 2))
    if backend.startswith("torch"):
        dtype = torch.float32 if backend == "torch32" else torch.float64
        theta = torch.as_tensor(x0, dtype=dtype)
        rng = torch.Generator().manual_seed(5)
    else:
        theta = x0.astype(np.float32 if backend == "numpy32" else np.float64)
        rng = np.random.default_rng(5)
    st = init_overdamped(lw, theta)
    before = (st.theta.clone(), st.grad.clone()) if backend.startswith("torch") else (st.theta.copy(), st.grad.copy())
    new = euler_maruyama(rng, st, lw, dt=0.01, D=0.0)  # D = 0: deterministic, exactly the drift
    # the given state is untouched
    if backend.startswith("torch"):
        assert torch.equal(st.theta, before[0]) and torch.equal(st.grad, before[1])
        assert new.theta.dtype == theta.dtype and new.grad.dtype == theta.dtype
        th, g, g_new, th_new = (t.double().numpy() for t in (st.theta, st.grad, new.grad, new.theta))
    else:
        assert np.array_equal(st.theta, before[0]) and np.array_equal(st.grad, before[1])
        assert new.theta.dtype == theta.dtype and new.grad.dtype == theta.dtype
        th, g, g_new, th_new = st.theta, st.grad, new.grad, new.theta
    tol = 1e-5 if backend.endswith("32") else 1e-12
    np.testing.assert_allclose(th_new, th - 0.01 * g, rtol=tol, atol=tol)
    x, y = th_new[:, 0], th_new[:, 1]
    ref = np.stack([4 * x * (x * x - 1), 2 * y], axis=1)
    np.testing.assert_allclose(g_new, ref, rtol=10 * tol, atol=10 * tol)
    assert new.step == 1


def test_chunked_step_noise_statistics_and_determinism():
    lw = double_well_2d()
    theta = torch.zeros(3 * N_BIG, 2)
    st = init_overdamped(lw, theta)
    a = euler_maruyama(torch.Generator().manual_seed(1), st, lw, dt=0.01, D=0.05)
    b = euler_maruyama(torch.Generator().manual_seed(1), st, lw, dt=0.01, D=0.05)
    assert torch.equal(a.theta, b.theta)
    z = a.theta.double() / np.sqrt(2 * 0.05 * 0.01)  # grad(0) = 0: pure noise
    assert abs(float(z.mean())) < 0.02 and abs(float(z.std()) - 1.0) < 0.02
    # no two chunks repeat the same numbers
    rows = _CPU_CHUNK_ELEMENTS // 2
    assert not torch.equal(a.theta[:rows], a.theta[rows:2 * rows])


def test_noncontiguous_theta_and_grad_match():
    lw = double_well_2d()
    base = torch.randn(2, N_BIG + 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    theta = base.T  # non-contiguous (N, 2)
    g = lw.grad(theta)
    np.testing.assert_allclose(g.numpy(), lw.grad(theta.contiguous()).numpy(), rtol=0, atol=0)
    st = init_overdamped(lw, theta)
    new = euler_maruyama(torch.Generator().manual_seed(0), st, lw, dt=0.01, D=0.05)
    assert new.theta.shape == theta.shape and new.theta.is_contiguous()


def test_subclass_overriding_grad_is_respected():
    class Shifted(DoubleWell):
        def _grad(self, th):
            return super()._grad(th) + 1.0

    lw = Shifted(2)
    st = init_overdamped(lw, torch.zeros(N_BIG + 5, 2, dtype=torch.float64))
    new = euler_maruyama(torch.Generator().manual_seed(0), st, lw, dt=0.01, D=0.0)
    np.testing.assert_allclose(new.theta.numpy(), -0.01 * np.ones((N_BIG + 5, 2)))
    np.testing.assert_allclose(new.grad.numpy(), lw.grad(new.theta).numpy())


def test_numpy_grad_is_textbook_formula_bit_for_bit():
    lw = DoubleWell(3, barrier=1.0, transverse=1.0)
    th = np.random.default_rng(0).normal(size=(N_BIG, 3)).astype(np.float32)
    x = th[:, 0]
    ref = np.empty_like(th)
    ref[:, 0] = 4.0 * x * (x * x - 1.0)
    ref[:, 1:] = 2.0 * th[:, 1:]
    assert np.array_equal(lw.grad(th), ref)


def test_torch_cpu_grad_matches_numpy_and_stays_differentiable():
    lw = double_well_2d()
    th = np.random.default_rng(1).normal(size=(N_BIG + 11, 2))
    for dtype in (np.float32, np.float64):
        a = th.astype(dtype)
        assert np.array_equal(lw.grad(torch.from_numpy(a)).numpy(), lw.grad(a))
    x = torch.tensor(th[:4], requires_grad=True)
    lw.grad(x)[:, 0].sum().backward()
    np.testing.assert_allclose(x.grad[:, 0].numpy(), 12 * th[:4, 0] ** 2 - 4, rtol=1e-12)
