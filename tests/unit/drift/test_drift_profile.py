"""Profiles: bounded size, streaming == batch, JSON round trip, incremental reference, loaders."""

import json

import numpy as np
import pytest

from modelpilot.drift import (
    CategoricalProfile,
    DatasetProfile,
    Moments,
    NumericProfile,
    ProfileConfig,
    ReferenceBuilder,
    build_reference_profile,
    detect_drift,
    load_csv,
    load_npz,
    load_parquet,
    profile_window,
)
from modelpilot.drift.reference_builder import reservoir_slots


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(8)
    rows = 30_000
    return {
        "x": rng.normal(5, 2, rows),
        "y": rng.exponential(3, rows),
        "z": rng.normal(size=rows) * 0.5 + rng.normal(5, 2, rows),
        "kind": rng.choice(["a", "b", "c"], rows),
    }


def test_profile_memory_is_bounded_by_the_grid_not_the_rows(data):
    config = ProfileConfig(fine_bins=200, psi_bins=10)
    small = NumericProfile.from_values(data["x"][:5_000], config)
    large = NumericProfile.from_values(data["x"], config)
    assert small.counts.size == large.counts.size == 202
    assert large.raw is None and large.n == 30_000
    assert np.all(np.isin(large.psi_edges, large.edges))


def test_moments_match_numpy_and_merge_exactly(data):
    values = data["y"]
    whole = Moments.of(values)
    merged = Moments.of(values[:12_345]).merge(Moments.of(values[12_345:]))
    for summary in (whole, merged):
        assert summary.count == values.size
        assert summary.mean == pytest.approx(values.mean(), rel=1e-12)
        assert summary.variance == pytest.approx(values.var(), rel=1e-9)
        assert (summary.min, summary.max) == (values.min(), values.max())


def test_streaming_update_equals_batch_profile(data):
    reference = build_reference_profile(data)
    batch = profile_window(reference, data)
    streamed = reference.new_window()
    for start in range(0, 30_000, 4_096):
        streamed.update({name: column[start : start + 4_096] for name, column in data.items()})
    assert streamed.n_rows == batch.n_rows == 30_000
    for name in ("x", "y", "z"):
        ref, one, many = reference.features[name], batch.features[name], streamed.features[name]
        np.testing.assert_array_equal(one.counts, ref.counts)  # same data, same grid
        np.testing.assert_array_equal(many.counts, one.counts)
        np.testing.assert_allclose(many.sums, one.sums, rtol=1e-9, atol=1e-9)
        assert many.moments.mean == pytest.approx(one.moments.mean, rel=1e-12)
        assert many.moments.m2 == pytest.approx(one.moments.m2, rel=1e-9)
    np.testing.assert_array_equal(streamed.features["kind"].counts, reference.features["kind"].counts)
    # PCA errors are scored on at most pca_max_rows rows per update: every row of small batches.
    assert streamed.pca_errors.count == 30_000 and batch.pca_errors.count == 20_000
    assert streamed.pca_errors.mean == pytest.approx(batch.pca_errors.mean, rel=0.05)


def test_json_round_trip_preserves_every_statistic(data):
    reference = build_reference_profile(data)
    window = profile_window(reference, {name: column[:2_000] for name, column in data.items()})
    text = json.dumps(reference.to_dict(), allow_nan=False)
    restored = DatasetProfile.from_dict(json.loads(text))
    restored_window = DatasetProfile.from_dict(json.loads(json.dumps(window.to_dict(), allow_nan=False)))
    original = detect_drift(reference, window).to_dict()
    assert detect_drift(restored, restored_window).to_dict() == original
    assert detect_drift(restored, window).to_dict() == original
    assert restored.pca.n_components == reference.pca.n_components


def test_unknown_format_version_is_rejected(data):
    payload = build_reference_profile({"x": data["x"][:100]}).to_dict()
    payload["version"] = 99
    with pytest.raises(ValueError, match="version"):
        DatasetProfile.from_dict(payload)


def test_categorical_profile_caps_categories_and_pools_the_rest():
    values = np.array(["a"] * 50 + ["b"] * 30 + ["c"] * 15 + ["d"] * 5)
    profile = CategoricalProfile.from_values(values, max_categories=2)
    assert profile.categories == ("a", "b")
    assert profile.counts.tolist() == [50, 30, 20]
    window = profile.empty_like()
    window.update(np.array(["a", "zzz", None, "c"], dtype=object))
    assert window.counts.tolist() == [1, 0, 2] and window.missing == 1


def test_integer_codes_are_the_same_category_as_float_codes():
    profile = CategoricalProfile.from_values(np.array([1, 2, 2, 3]))
    window = profile.empty_like()
    window.update(np.array([1.0, 2.0, np.nan]))
    assert window.counts.tolist() == [1, 1, 0, 0] and window.missing == 1


def test_reservoir_keeps_every_stream_position_equally_likely():
    rng = np.random.default_rng(3)
    hits = np.zeros(600)
    for _ in range(600):
        reservoir, seen = np.full(50, -1), 0
        for start in range(0, 600, 70):
            batch = np.arange(start, min(start + 70, 600))
            positions, slots = reservoir_slots(seen, batch.size, 50, rng)
            reservoir[slots] = batch[positions]
            seen += batch.size
        assert np.unique(reservoir).size == 50 and reservoir.min() >= 0
        hits[reservoir] += 1
    inclusion = hits / 600  # each position should be kept with probability 50/600
    assert np.abs(inclusion.reshape(6, 100).mean(axis=1) - 50 / 600).max() < 0.01


def test_incremental_reference_matches_a_batch_reference(data):
    builder = ReferenceBuilder(reservoir_size=10_000)
    for start in range(0, 30_000, 3_000):
        builder.update({name: column[start : start + 3_000] for name, column in data.items()})
    incremental = builder.build()
    batch = build_reference_profile(data)
    assert incremental.n_rows == 30_000
    assert incremental.features["x"].moments.count == 30_000
    assert incremental.features["x"].moments.mean == pytest.approx(data["x"].mean())
    # Reservoir quantiles land close to the true quantiles.
    for name in ("x", "y"):
        true_deciles = np.quantile(data[name], np.linspace(0.1, 0.9, 9))
        spread = data[name].std()
        assert np.abs(incremental.features[name].psi_edges - true_deciles).max() < 0.05 * spread
    same = {name: column[:2_000] for name, column in data.items()}
    assert detect_drift(incremental, same).n_drifted == detect_drift(batch, same).n_drifted == 0


def test_npz_columns_are_loaded_lazily_and_match_the_arrays(tmp_path, data):
    numeric = {name: data[name] for name in ("x", "y")}
    np.savez(tmp_path / "columns.npz", **numeric)
    columns = load_npz(tmp_path / "columns.npz")
    assert list(columns) == ["x", "y"]
    np.testing.assert_array_equal(columns["y"], data["y"])
    matrix = np.column_stack([data["x"], data["y"]])
    np.savez(tmp_path / "matrix.npz", values=matrix, feature_names=np.array(["x", "y"]))
    from_matrix = load_npz(tmp_path / "matrix.npz")
    np.testing.assert_array_equal(from_matrix["x"], data["x"])
    a = build_reference_profile(columns).features["x"]
    b = build_reference_profile(from_matrix).features["x"]
    np.testing.assert_array_equal(a.counts, b.counts)


def test_csv_loader_parses_numbers_and_keeps_text_as_categories(tmp_path):
    path = tmp_path / "ref.csv"
    path.write_text('amount,city\n1.5,Paris\n,"New York, NY"\n3,\n')
    columns = load_csv(path)
    np.testing.assert_array_equal(columns["amount"], [1.5, np.nan, 3.0])
    assert list(columns["city"]) == ["Paris", "New York, NY", None]
    profile = build_reference_profile(columns, config=ProfileConfig(pca=False))
    assert profile.features["city"].kind == "categorical" and profile.features["city"].missing == 1
    assert profile.features["amount"].moments.nan_count == 1


def test_parquet_round_trip_when_pyarrow_is_available(tmp_path):
    pyarrow = pytest.importorskip("pyarrow")
    parquet = pytest.importorskip("pyarrow.parquet")
    parquet.write_table(pyarrow.table({"a": [1.0, 2.0], "b": ["x", "y"]}), tmp_path / "t.parquet")
    columns = load_parquet(tmp_path / "t.parquet")
    assert columns["a"].tolist() == [1.0, 2.0] and list(columns["b"]) == ["x", "y"]


def test_parquet_without_pyarrow_explains_what_to_install(monkeypatch, tmp_path):
    import sys

    # A None entry in sys.modules makes `import pyarrow.parquet` fail, installed or not.
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ImportError, match="pip install pyarrow"):
        load_parquet(tmp_path / "missing.parquet")
