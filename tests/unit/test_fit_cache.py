"""The cache of fitted models (cmbstudy.training.fit_cache): one fit per key, read back after, refitted when
its file is unreadable."""

from __future__ import annotations

import numpy as np
import torch

from cmbstudy.training.fit_cache import fit_key, load_or_fit


def test_a_key_is_fitted_once_and_read_back(tmp_path) -> None:
    calls = []

    def fit(value: float):
        def run():
            calls.append(value)
            return {"weights": np.full((3, 4), value)}
        return run

    first = load_or_fit(tmp_path, "a" * 64, fit(1.0))
    again = load_or_fit(tmp_path, "a" * 64, fit(2.0))  # the same key: read, not fitted
    assert calls == [1.0] and np.array_equal(again["weights"], first["weights"])
    assert load_or_fit(tmp_path, "b" * 64, fit(3.0))["weights"][0, 0] == 3.0 and calls == [1.0, 3.0]
    assert load_or_fit(None, "a" * 64, fit(4.0))["weights"][0, 0] == 4.0 and calls == [1.0, 3.0, 4.0]
    assert sorted(p.suffix for p in tmp_path.iterdir() if p.suffix != ".lock") == [".joblib", ".joblib"]
    # a truncated file is fitted again and replaced
    (tmp_path / f"{'a' * 64}.joblib").write_bytes(b"not a joblib file")
    assert load_or_fit(tmp_path, "a" * 64, fit(5.0))["weights"][0, 0] == 5.0
    assert load_or_fit(tmp_path, "a" * 64, fit(6.0))["weights"][0, 0] == 5.0


def test_the_key_follows_every_array_the_settings_and_the_thread_count() -> None:
    rng = np.random.default_rng(0)
    image, mask = rng.random((7, 6, 5), dtype=np.float32), rng.random((7, 6, 5)) > 0.5
    key = fit_key([image, mask, None], {"seed": 0})
    assert fit_key([image.copy(), mask.copy(), None], {"seed": 0}) == key
    changed = image.copy()
    changed[3, 2, 1] += 1e-3
    assert fit_key([changed, mask, None], {"seed": 0}) != key
    assert fit_key([image.astype(np.float64), mask, None], {"seed": 0}) != key
    assert fit_key([image.reshape(6, 7, 5), mask, None], {"seed": 0}) != key
    assert fit_key([image, mask, image], {"seed": 0}) != key  # a phase image where there was none
    assert fit_key([image, mask, None], {"seed": 1}) != key
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)
        assert fit_key([image, mask, None], {"seed": 0}) != key
    finally:
        torch.set_num_threads(threads)
