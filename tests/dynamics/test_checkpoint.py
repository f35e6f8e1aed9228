"""Data-only checkpoints (hhld.dynamics.checkpoint): round trip of every supported value, refusals."""
import numpy as np
import pytest

from hhld.dynamics import checkpoint


def test_round_trip_keeps_structure_and_arrays(tmp_path):
    payload = {"a": np.arange(6.0).reshape(2, 3), "t": (1, "x", None), "l": [np.ones(2), np.zeros(2)],
               "nested": {"f": 1.5, "b": True}, "keys": {3: "int key"}, "nan": float("nan")}
    path = checkpoint.write(tmp_path / "c.npz", payload)
    back = checkpoint.read(path)
    assert np.array_equal(back["a"], payload["a"]) and back["t"] == (1, "x", None)
    assert all(np.array_equal(x, y) for x, y in zip(back["l"], payload["l"]))
    assert back["nested"] == {"f": 1.5, "b": True} and back["keys"] == {3: "int key"} and np.isnan(back["nan"])


def test_refuses_code_and_foreign_files(tmp_path):
    with pytest.raises(TypeError, match="cannot go into a data-only checkpoint"):
        checkpoint.write(tmp_path / "c.npz", {"f": lambda: 1})
    with pytest.raises(TypeError, match="dtype object"):
        checkpoint.write(tmp_path / "c.npz", {"o": np.array([object()])})
    other = tmp_path / "other.npz"
    np.savez(other, x=np.ones(2))
    with pytest.raises(ValueError, match="not an hhld checkpoint"):
        checkpoint.read(other)
