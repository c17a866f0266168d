"""The statistics behind every interval the pipeline reports (ith_core.evaluation.scoring).

Each check compares with a computation that does not go through the code under test: a closed
form, a plain loop, or data built so that the right answer is known.
"""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

from ith_core.evaluation.scoring import (
    UNIT_NAMES,
    accuracy_table,
    bootstrap_ci,
    bootstrap_units,
    paired_comparisons,
    seed_mean_table,
    seed_summary,
)


def _pred(model, seed, example_id, correct, task="pitch", split="test"):
    return {
        "model": model,
        "seed": seed,
        "task": task,
        "split": split,
        "example_id": example_id,
        "correct": bool(correct),
        "mc_correct": None,
    }


def test_row_interval_matches_the_normal_approximation():
    # 70 of 100 right: the binomial standard error is sqrt(0.7 * 0.3 / 100) = 4.58 points.
    lo, hi = bootstrap_ci(np.array([1.0] * 70 + [0.0] * 30), n_boot=4000, seed=1)
    se = 100 * (0.7 * 0.3 / 100) ** 0.5
    assert abs(lo - (70 - 1.96 * se)) < 1.5 and abs(hi - (70 + 1.96 * se)) < 1.5, (lo, hi)


def _ideal_bootstrap_interval(units: int, correct: int, level: float = 0.95) -> tuple[float, float]:
    """The percentile interval (in %) of the ideal bootstrap of `correct` right out of `units` equal units.

    Resampling the units with replacement draws a Binomial(units, correct / units) count of right
    ones, so the interval is that binomial's quantiles over `units`: a closed form, summed here.
    A Monte Carlo bootstrap of 20,000 draws lands on it exactly only where the binomial CDF steps
    across each tail probability with room to spare (>= 0.005, about 4.5 sd of the estimate), so
    that is asserted too.
    """
    p, cdf, below, bounds = correct / units, 0.0, 0.0, []
    tails = [(1 - level) / 2, 1 - (1 - level) / 2]
    for x in range(units + 1):
        below, cdf = cdf, cdf + math.comb(units, x) * p**x * (1 - p) ** (units - x)
        while tails and cdf >= tails[0]:
            assert tails[0] - below >= 0.005 and cdf - tails[0] >= 0.005, (units, correct, x)
            bounds.append(100 * x / units)
            tails.pop(0)
    return bounds[0], bounds[1]


def test_interval_equals_the_ideal_bootstrap_in_closed_form_for_rows_units_and_crossed_units():
    # Rows: 14 of 20 right, each row its own unit.
    want = _ideal_bootstrap_interval(20, 14)
    assert want == (50.0, 90.0)
    outcomes = np.array([1.0] * 14 + [0.0] * 6)
    assert bootstrap_ci(outcomes, n_boot=20000, seed=4) == pytest.approx(want, abs=1e-9)
    # Units: 12 descriptions of 5 rows each, all 5 right or all 5 wrong (8 of 12 descriptions right):
    # 60 rows, but the interval is that of 12 observations.
    clustered = np.repeat([1.0] * 8 + [0.0] * 4, 5)
    units = np.repeat([f"d{i}" for i in range(12)], 5)
    assert bootstrap_ci(clustered, n_boot=20000, seed=4, clusters=units) == pytest.approx(
        _ideal_bootstrap_interval(12, 8), abs=1e-9
    )
    # Crossed units (first sound x second sound) where only the first sound decides the outcome:
    # the second factor's draw weighs every first sound alike, so the interval is the first's alone.
    keys = [(f"a{a}", f"b{b}") for a in range(20) for b in range(3)]
    crossed = np.array([float(a < 14) for a in range(20) for _ in range(3)])
    assert bootstrap_ci(crossed, n_boot=20000, seed=4, clusters=keys) == pytest.approx(want, abs=1e-9)


def test_degenerate_intervals_are_exact():
    assert bootstrap_ci(np.ones(37), n_boot=500, seed=9) == (100.0, 100.0)
    assert bootstrap_ci(np.zeros(37), n_boot=500, seed=9) == (0.0, 0.0)
    # One unit holding every row: every resample is the whole data, 3 of 4 right.
    assert bootstrap_ci(np.array([1.0, 0.0, 1.0, 1.0]), n_boot=500, seed=9, clusters=["u"] * 4) == (75.0, 75.0)
    assert all(math.isnan(x) for x in bootstrap_ci(np.array([]), n_boot=500, seed=9))


def test_cluster_interval_matches_a_plain_loop_and_is_wider_where_clusters_repeat():
    # 20 clusters of 10 identical outcomes: the data hold 20 independent observations, not 200.
    rng = np.random.default_rng(0)
    per_cluster = rng.random(20) < 0.6
    outcomes = np.repeat(per_cluster, 10).astype(np.float64)
    clusters = np.repeat([f"c{i}" for i in range(20)], 10)
    rows = bootstrap_ci(outcomes, n_boot=4000, seed=3)
    by_cluster = bootstrap_ci(outcomes, n_boot=4000, seed=3, clusters=clusters)
    # A plain loop: draw 20 clusters with replacement, pool their rows.
    loop = np.random.default_rng(7)
    means = []
    for _ in range(4000):
        drawn = loop.integers(0, 20, size=20)
        means.append(np.concatenate([outcomes[clusters == f"c{c}"] for c in drawn]).mean())
    expected = 100 * np.quantile(means, [0.025, 0.975])
    assert abs(by_cluster[0] - expected[0]) <= 5.1 and abs(by_cluster[1] - expected[1]) <= 5.1, (by_cluster, expected)
    # sqrt(10) ~ 3.2 times as wide; allow for bootstrap noise.
    ratio = (by_cluster[1] - by_cluster[0]) / (rows[1] - rows[0])
    assert 2.3 < ratio < 4.2, (rows, by_cluster)


def test_crossed_units_are_wider_than_either_factor_alone_when_both_are_shared():
    # Pitch-like rows: 30 first sounds x 4 second sounds; the outcome depends on both sounds.
    rng = np.random.default_rng(2)
    a_effect, b_effect = rng.random(30) < 0.5, rng.random(4) < 0.5
    keys, outcomes = [], []
    for a in range(30):
        for b in range(4):
            keys.append((f"a{a}", f"b{b}"))
            outcomes.append(float(a_effect[a] ^ b_effect[b]))
    outcomes = np.asarray(outcomes)
    crossed = bootstrap_ci(outcomes, 2000, 0, clusters=keys)
    first_only = bootstrap_ci(outcomes, 2000, 0, clusters=[k[0] for k in keys])
    assert crossed[1] - crossed[0] > 1.3 * (first_only[1] - first_only[0]), (crossed, first_only)


def test_auditorybench_units_and_the_run_table_on_repeated_descriptions():
    # A tiny AuditoryBench-like split where 60 rows share 6 descriptions (as "chirping" shares 73 rows).
    examples = []
    for i in range(60):
        examples.append(
            {"example_id": f"a{i}", "task": "animal", "spans": [f" Chirping{i % 6} " if i % 2 else f"chirping{i % 6}"]}
        )
    examples += [
        {"example_id": "p0", "task": "pitch", "spans": ["Sound of Birds", "sound of  a car"]},
        {"example_id": "p1", "task": "pitch", "spans": ["sound of birds"]},
    ]
    units = bootstrap_units(examples, "auditorybench")
    assert units["a0"] == units["a6"] == "chirping0" and len({units[f"a{i}"] for i in range(60)}) == 6
    assert units["p0"] == ("sound of birds", "sound of a car") and units["p1"] == ("sound of birds", "")
    assert set(UNIT_NAMES["auditorybench"]) == {"animal", "pitch"}
    # Description i % 6 decides the outcome: a model that knows some sounds, not others.
    preds = [{**_pred("ith", 42, f"a{i}", (i % 6) < 3, task="animal"), "mc_correct": None} for i in range(60)]
    by_row = accuracy_table(preds, n_boot=2000)
    by_unit = accuracy_table(preds, n_boot=2000, clusters=units)
    row, unit = by_row[0], by_unit[0]
    assert row["accuracy"] == unit["accuracy"] == 50.0 and row["units"] == 60 and unit["units"] == 6
    assert unit["ci_high"] - unit["ci_low"] > 2 * (row["ci_high"] - row["ci_low"]), (row, unit)


def test_seed_mean_interval_includes_seed_to_seed_variance_and_sd_is_the_sample_sd():
    # Three seeds that disagree (20 %, 50 %, 80 % of the same 200 rows right): rows alone would give
    # an interval of a few points around 50; the hierarchical bootstrap must show the seeds' spread.
    preds = []
    for seed, share in ((1, 0.2), (2, 0.5), (3, 0.8)):
        preds += [_pred("ith", seed, f"r{i}", i < share * 200) for i in range(200)]
    row = seed_mean_table(preds, n_boot=2000)[0]
    assert row["mean"] == 50.0 and row["seeds"] == 3
    assert row["std"] == round(statistics.stdev([20.0, 50.0, 80.0]), 2)  # ddof 1: 30.0, not 24.49
    assert row["ci_low"] < 30 and row["ci_high"] > 70, row
    summary = seed_summary(accuracy_table(preds, n_boot=50))
    assert summary[0]["std"] == 30.0
    # One seed: no sd.
    assert seed_summary(accuracy_table([p for p in preds if p["seed"] == 1], n_boot=50))[0]["std"] is None


def test_paired_comparison_p_value_tells_better_from_equal():
    preds = []
    rng = np.random.default_rng(5)
    for seed in (1, 2, 3):
        preds += [_pred("ith", seed, f"r{i}", rng.random() < 0.9) for i in range(150)]
        preds += [_pred("bert-text", seed, f"r{i}", rng.random() < 0.5) for i in range(150)]
        preds += [_pred("audiobert", seed, f"r{i}", rng.random() < 0.9) for i in range(150)]
    rows = {
        (r["a"], r["b"]): r
        for r in paired_comparisons(preds, [("ith", "bert-text"), ("ith", "audiobert")], n_boot=2000)
    }
    better, equal = rows[("ith", "bert-text")], rows[("ith", "audiobert")]
    assert better["p_not_better"] == 0.0 and better["ci_low"] > 25 and better["seeds_a"] == 3
    assert 0.05 < equal["p_not_better"] < 0.95 and equal["ci_low"] < 0 < equal["ci_high"], equal


def test_synthetic_units_are_source_names():
    examples = [{"example_id": "x", "task": "pitch", "spans": ["Kelomit", "whistle"]}]
    assert bootstrap_units(examples, "synthetic") == {"x": "kelomit"}
    assert UNIT_NAMES["synthetic"] == {"animal": "source name", "pitch": "source name"}
