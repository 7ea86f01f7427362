"""The lookup-table binning must agree with searchsorted on every value, including edge hits."""

import numpy as np
import pytest

from modelpilot.drift.binning import EdgeLocator


def quantile_edges(values, bins=1000):
    ordered = np.sort(values)
    return np.unique(ordered[np.floor(np.linspace(0, 1, bins + 1) * (ordered.size - 1)).astype(int)])


@pytest.mark.parametrize(
    "draw",
    [
        lambda rng, n: rng.normal(size=n),
        lambda rng, n: rng.lognormal(0, 2, n),
        lambda rng, n: rng.standard_cauchy(n),
        lambda rng, n: rng.integers(0, 7, n).astype(float),
        lambda rng, n: rng.normal(1e9, 1e-3, n),  # large magnitude, tiny spread: rounding stress
        lambda rng, n: np.concatenate([np.zeros(n // 2), rng.exponential(1, n - n // 2)]),
    ],
    ids=["normal", "lognormal", "cauchy", "integers", "offset", "zero_inflated"],
)
def test_bin_index_equals_searchsorted(draw):
    rng = np.random.default_rng(21)
    edges = quantile_edges(draw(rng, 50_000))
    locator = EdgeLocator(edges, cells=1 << 14)
    probes = np.concatenate(
        [
            draw(rng, 50_000),
            draw(rng, 5_000) * 3,  # well outside the reference range
            edges,  # exact edge hits
            np.nextafter(edges, -np.inf),
            np.nextafter(edges, np.inf),
        ]
    )
    np.testing.assert_array_equal(locator.bin_index(probes), np.searchsorted(edges, probes, side="right"))
    assert locator.uses_table
    np.testing.assert_array_equal(
        locator.bin_index(probes[:100]), np.searchsorted(edges, probes[:100], side="right")
    )


def test_table_is_only_built_once_enough_values_went_through():
    edges = quantile_edges(np.random.default_rng(1).normal(size=10_000))
    locator = EdgeLocator(edges, cells=1 << 12)
    locator.bin_index(np.zeros(3_000))
    assert not locator.uses_table
    locator.bin_index(np.zeros(2_000))
    assert locator.uses_table


@pytest.mark.parametrize("edges", [np.empty(0), np.array([3.0]), np.array([1.0, 2.0, 3.0])])
def test_tiny_grids_fall_back_to_searchsorted(edges):
    probes = np.array([-1.0, 1.0, 1.5, 2.0, 3.0, 9.0])
    np.testing.assert_array_equal(
        EdgeLocator(edges).bin_index(probes), np.searchsorted(edges, probes, side="right")
    )
