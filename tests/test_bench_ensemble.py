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


# ------------------------------------------------------ fused C kernel
def _kernel_available():
    from hhld.dynamics import integrators as I

    return I._c_kernel() is not None


needs_kernel = pytest.mark.skipif(not _kernel_available(), reason="no C compiler: the fused kernel is unavailable")


def _run_steps(landscape, theta, n_steps, seed=9):
    st = init_overdamped(landscape, theta)
    g = torch.Generator().manual_seed(seed)
    for _ in range(n_steps):
        st = euler_maruyama(g, st, landscape, dt=0.01, D=0.05)
    return st


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("dim", [1, 2, 3])
def test_fused_kernel_is_bit_for_bit_the_numpy_path(monkeypatch, dtype, dim):
    from hhld.dynamics import integrators as I

    lw = DoubleWell(dim, barrier=0.7, transverse=1.3)
    theta = torch.randn(N_BIG + 7, dim, generator=torch.Generator().manual_seed(2), dtype=dtype) * 1.5
    fused = _run_steps(lw, theta, 4)
    assert I.known_finite(fused.theta)  # the kernel ran on the last step
    monkeypatch.setattr(I, "_C_KERNEL", [False])  # force the chunked numpy path
    plain = _run_steps(lw, theta, 4)
    assert not I.known_finite(plain.theta)
    assert torch.equal(fused.theta, plain.theta) and torch.equal(fused.grad, plain.grad)
    assert fused.theta.dtype == dtype and fused.grad.dtype == dtype
    assert torch.equal(fused.grad, lw.grad(fused.theta))


@needs_kernel
@pytest.mark.filterwarnings("ignore:overflow encountered")  # the initial gradient, in numpy
@pytest.mark.parametrize("mode", ["raise", "drop"])
def test_fused_kernel_nonfinite_names_step_and_particle(mode):
    import hhld
    from hhld.dynamics import Simulation

    n, bad = 5000, 4321
    theta = torch.zeros(n, 2)
    theta[bad, 0] = 1e20  # finite, but its gradient overflows: non-finite after step 1
    sim = Simulation(double_well_2d(), theta, dt=0.01, D=0.05, rng=torch.Generator().manual_seed(0),
                     on_nonfinite=mode)
    if mode == "raise":
        with pytest.raises(hhld.NonFiniteError, match=rf"step 1 in particle {bad}") as err:
            sim.run(3)
        assert err.value.step == 1 and err.value.particle == bad
    else:
        sim.run(3)
        assert sim.dropped == [(1, bad, "non-finite theta")]
        assert sim.state.theta.shape == (n - 1, 2) and bool(torch.isfinite(sim.state.theta).all())


def test_fused_kernel_can_be_disabled_and_falls_back_without_compiler(monkeypatch, tmp_path):
    from hhld.dynamics import integrators as I

    monkeypatch.setenv("HHLD_C_KERNEL", "0")
    assert I._c_load() is None and "disabled" in I.C_KERNEL_STATUS
    monkeypatch.delenv("HHLD_C_KERNEL")
    monkeypatch.setenv("HHLD_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    assert I._c_load() is None and I.C_KERNEL_STATUS.startswith("unavailable")
    assert list(tmp_path.iterdir()) == []
    # the step itself still works (numpy path) when the kernel is unavailable
    monkeypatch.setattr(I, "_C_KERNEL", [False])
    st = _run_steps(double_well_2d(), torch.zeros(N_BIG, 2), 2)
    assert bool(torch.isfinite(st.theta).all()) and not I.known_finite(st.theta)


@needs_kernel
def test_fused_kernel_builds_into_the_cache_dir(monkeypatch, tmp_path):
    from hhld.dynamics import integrators as I

    monkeypatch.setenv("HHLD_CACHE_DIR", str(tmp_path))
    fns = I._c_load()
    assert fns is not None and str(tmp_path) in I.C_KERNEL_STATUS
    built = [p.name for p in tmp_path.iterdir()]
    assert len(built) == 1 and built[0].startswith("em_cubic_") and built[0].endswith(".so")
    assert I._c_load() is not None and [p.name for p in tmp_path.iterdir()] == built  # reused, not rebuilt


@needs_kernel
def test_fused_kernel_without_a_usable_cache_builds_in_a_temporary_dir(monkeypatch, tmp_path):
    from hhld.dynamics import integrators as I

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("HHLD_CACHE_DIR", str(blocker / "sub"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    assert I._c_load() is not None and "temporary build" in I.C_KERNEL_STATUS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_step_with_a_gradient_of_the_wrong_shape_raises():
    lw = double_well_2d()
    st = init_overdamped(lw, torch.zeros(N_BIG, 2))
    bad = st._replace(grad=st.grad[:-3])  # never handed to the kernel (it reads raw memory)
    with pytest.raises((ValueError, RuntimeError)):
        euler_maruyama(torch.Generator().manual_seed(0), bad, lw, dt=0.01, D=0.05)
