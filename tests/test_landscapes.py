"""Landscapes: gradients/Hessians against finite differences, backends, dtypes, user landscapes, errors."""
import numpy as np
import pytest
import torch

from hhld.landscapes import (
    LANDSCAPES,
    DoubleWell,
    MullerBrown,
    NumpyLandscape,
    Quadratic,
    QuadraticQuartic,
    Rosenbrock,
    TiltedDoubleWell,
    TorchLandscape,
    anisotropic_quadratic,
    double_well_1d,
    double_well_2d,
    get_landscape,
)

BUILTINS = [double_well_1d(), double_well_2d(), DoubleWell(dim=5, barrier=2.0, transverse=0.5),
            TiltedDoubleWell(dim=2, tilt=0.3), Quadratic(np.array([[2.0, 0.5], [0.5, 1.0]])),
            anisotropic_quadratic(6), Rosenbrock(3), MullerBrown(scale=0.01),
            QuadraticQuartic(dim=3, kappa=0.7, q=1.3)]


def _fd_grad(L, x, h=1e-6):
    g = np.zeros_like(x)
    for j in range(x.shape[1]):
        e = np.zeros(x.shape[1])
        e[j] = h
        g[:, j] = (L.value(x + e) - L.value(x - e)) / (2 * h)
    return g


@pytest.mark.parametrize("L", BUILTINS, ids=lambda L: repr(L))
def test_gradient_hessian_laplacian_against_finite_differences(L):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(9, L.dim))
    np.testing.assert_allclose(L.grad(x), _fd_grad(L, x), rtol=1e-6, atol=1e-6)
    H = L.hessian(x)
    Hfd = np.stack([_fd_grad(type("G", (), {"value": lambda s, y, j=j: L.grad(y)[:, j]})(), x)
                    for j in range(L.dim)], axis=1)
    np.testing.assert_allclose(H, Hfd, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(L.laplacian(x), np.trace(H, axis1=1, axis2=2), rtol=1e-6, atol=1e-6)
    v = rng.normal(size=x.shape)
    np.testing.assert_allclose(L.hvp(x, v), np.einsum("nij,nj->ni", H, v), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("L", BUILTINS, ids=lambda L: repr(L))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_backend_matches_numpy_and_keeps_dtype(L, dtype):
    x = np.random.default_rng(1).uniform(-1, 1, size=(5, L.dim))
    t = torch.tensor(x, dtype=dtype)
    g = L.grad(t)
    assert isinstance(g, torch.Tensor) and g.dtype == dtype
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    np.testing.assert_allclose(g.numpy(), L.grad(x), rtol=tol, atol=tol)
    assert L.value(x.astype(np.float32)).dtype == np.float32


def test_single_point_and_documents_functions():
    L = double_well_2d()
    assert np.isclose(L.value(np.array([0.0, 0.0])), 1.0)
    assert L.grad(np.array([1.0, 0.5])).shape == (2,)
    assert np.allclose(anisotropic_quadratic(50).eigenvalues(), np.linspace(0.1, 10, 50))


def test_bad_shapes_named():
    with pytest.raises(ValueError, match=r"shape \(N, 2\) or \(2,\), got shape \(3, 4\)"):
        double_well_2d().grad(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="symmetric"):
        Quadratic(np.array([[1.0, 2.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="unknown landscape 'nope'"):
        get_landscape("nope")
    with pytest.raises(ValueError, match="dim must be a positive integer"):
        DoubleWell(dim=0)


def test_numpy_landscape_vectorisation_detection():
    def dw_loss(theta):  # the documents' style
        x, y = theta[0], theta[1]
        return (x ** 2 - 1) ** 2 + y ** 2

    def dw_grad(theta):
        x, y = theta[0], theta[1]
        return np.array([4 * x * (x ** 2 - 1), 2 * y])

    def q_loss(theta):
        ev = np.linspace(0.1, 10, len(theta))
        return 0.5 * np.sum(ev * theta ** 2)

    L = NumpyLandscape(dw_loss, dw_grad, 2)
    x = np.random.default_rng(0).normal(size=(11, 2))
    np.testing.assert_allclose(L.grad(x), double_well_2d().grad(x))
    np.testing.assert_allclose(L.value(x), double_well_2d().value(x))
    assert L.vectorize["grad"] == "transposed"
    Q = NumpyLandscape(q_loss, None, 4)  # gradient by finite differences
    y = np.random.default_rng(1).normal(size=(6, 4))
    np.testing.assert_allclose(Q.grad(y), anisotropic_quadratic(4).grad(y), rtol=1e-6, atol=1e-8)
    assert Q.vectorize["value"] == "loop"


def test_torch_landscape_autograd():
    T = TorchLandscape(lambda t: (t[:, 0] ** 2 - 1) ** 2 + t[:, 1] ** 2, 2)
    P = TorchLandscape(lambda p: (p[0] ** 2 - 1) ** 2 + p[1] ** 2, 2, batched=False)
    x = np.random.default_rng(2).normal(size=(7, 2))
    for land in (T, P):
        np.testing.assert_allclose(land.grad(x), double_well_2d().grad(x), rtol=1e-12)
        np.testing.assert_allclose(land.laplacian(x), double_well_2d().laplacian(x), rtol=1e-10)
    assert isinstance(T.grad(torch.tensor(x)), torch.Tensor)


def test_known_stationary_points_are_stationary():
    for L in [double_well_2d(), TiltedDoubleWell(tilt=0.2), MullerBrown()]:
        for p in L.minima() + L.saddles():
            assert np.linalg.norm(L.grad(p)) < (0.5 if isinstance(L, MullerBrown) else 1e-9)


def test_registry_builds_every_landscape():
    for name in LANDSCAPES:
        kw = {"A": np.eye(2)} if name == "quadratic" else {}
        L = get_landscape(name, **kw)
        assert np.isfinite(L.value(np.zeros(L.dim)))


def test_quadratic_quartic_values_and_bad_parameters():
    q = QuadraticQuartic(dim=1, kappa=2.0, q=3.0)
    assert q.value(np.array([0.5])) == pytest.approx(0.5 * 2 * 0.25 + 0.25 * 3 * 0.0625)
    assert q.minima()[0].tolist() == [0.0] and np.linalg.norm(q.grad(q.minima()[0])) == 0
    assert np.all(q.laplacian(np.linspace(-2, 2, 9)[:, None]) >= 2.0)  # kappa-convex
    with pytest.raises(ValueError, match="q must be finite and >= 0"):
        QuadraticQuartic(q=-1.0)
    with pytest.raises(ValueError, match="kappa and q cannot both be 0"):
        QuadraticQuartic(kappa=0.0, q=0.0)


def test_hvp_refuses_mixed_numpy_and_torch():
    lw = double_well_2d()
    with pytest.raises(TypeError, match="theta is a numpy array but v is a torch tensor"):
        lw.hvp(np.zeros((3, 2)), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="v has shape"):
        lw.hvp(np.zeros((3, 2)), np.zeros((2, 2)))


def test_a_function_or_a_number_is_not_a_landscape():
    from hhld.landscapes import get_landscape

    with pytest.raises(TypeError, match=r"function '<lambda>'.*NumpyLandscape\(loss_fn, grad_fn, dim\)"):
        get_landscape(lambda th: th ** 2)
    with pytest.raises(TypeError, match="got 3.0"):
        get_landscape(3.0)
