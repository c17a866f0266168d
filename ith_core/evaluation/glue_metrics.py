"""GLUE's metrics per task, with percentile bootstrap intervals and paired comparisons (numpy only).

    task_metrics("mrpc", predictions, labels)            # {"f1": ..., "accuracy": ...}
    bootstrap_metrics("stsb", scores_per_seed, labels)   # {"pearson": {"value", "low", "high"}, ...}
    paired_bootstrap("sst2", pred_a, pred_b, labels)     # {"accuracy": {"difference", "low", "high"}}

Metrics as GLUE reports them (`METRICS`, fractions in [0, 1], not percentages): accuracy; F1 of
the positive class 1 (QQP, MRPC); Matthews correlation (CoLA); Pearson and Spearman correlation
(STS-B; Spearman is Pearson of the ranks, ties given their average rank). Predictions are class
ids (integers) or, for STS-B, scores; labels are class ids or scores (a float array of integral
values is taken as class ids, as `glue.label` stores them).

Degenerate cases, on purpose and the same in every bootstrap resample (so an interval never turns
nan): an undefined correlation is 0.0 — Pearson or Spearman when the predictions or the labels are
constant, Matthews when a row or column of the confusion matrix is empty (scikit-learn's
convention for Matthews). A constant predictor carries no information about the labels, and 0 says
so. F1 with no positive predicted and none true (no true positive, false positive or false
negative) is 0.0, scikit-learn's `zero_division=0`.

Bootstrap: rows are resampled with replacement (`numpy.random.default_rng(seed)`), the same rows
for every seed of a 2-D (seeds, rows) prediction and for both systems of a paired comparison; a
resample's value is the metric of each seed averaged over seeds; the interval is the percentile
interval at `level`. `value` and `difference` are computed on all rows, not from the resamples.
"""

from __future__ import annotations

import numpy as np

from ith_core.data.glue import TASKS

METRICS: dict[str, tuple[str, ...]] = {name: task.metrics for name, task in TASKS.items()}


def aligned(rows: list[dict], ids: list[str] | None = None) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(example ids, predictions (seeds, rows), labels (rows)) of one system on one task.

    `rows`: its prediction rows (example_id, seed, prediction, label: GLUE_PREDICTION_SCHEMA);
    `ids`: the rows to take, in that order (None: the rows every seed scored, sorted).
    """
    by_seed: dict[int, dict[str, float]] = {}
    labels: dict[str, float] = {}
    for r in rows:
        by_seed.setdefault(r["seed"], {})[r["example_id"]] = r["prediction"]
        labels[r["example_id"]] = r["label"]
    seeds = sorted(by_seed)
    if ids is None:
        ids = sorted(set.intersection(*(set(by_seed[s]) for s in seeds))) if seeds else []
    predictions = np.asarray([[by_seed[s][i] for i in ids] for s in seeds], dtype=np.float64)
    return list(ids), predictions, np.asarray([labels[i] for i in ids], dtype=np.float64)


def _check(task: str, predictions, labels) -> tuple[np.ndarray, np.ndarray]:
    if task not in METRICS:
        raise ValueError(f"task must be one of the GLUE tasks ({', '.join(METRICS)}), got {task!r}")
    pred = np.asarray(predictions)
    gold = np.asarray(labels)
    if pred.ndim not in (1, 2) or gold.ndim != 1:
        raise ValueError(
            f"{task}: predictions must be 1-D (rows) or 2-D (seeds, rows) and labels 1-D, got shapes "
            f"{pred.shape} and {gold.shape}"
        )
    if pred.shape[-1] != gold.shape[0]:
        raise ValueError(f"{task}: {pred.shape[-1]} predictions per seed but {gold.shape[0]} labels")
    if gold.shape[0] == 0:
        raise ValueError(f"{task}: no rows to score")
    if TASKS[task].is_regression:
        return pred.astype(np.float64), gold.astype(np.float64)
    return _class_ids(task, pred, "predictions"), _class_ids(task, gold, "labels")


def _class_ids(task: str, values: np.ndarray, what: str) -> np.ndarray:
    if values.dtype.kind == "f":
        if not np.all(np.isfinite(values) & (values == np.round(values))):
            raise ValueError(f"{task}: {what} must be class ids (integers), got non-integral values")
    elif values.dtype.kind not in "iub":
        raise ValueError(f"{task}: {what} must be class ids (integers), got dtype {values.dtype}")
    ids = values.astype(np.int64)
    num_labels = TASKS[task].num_labels
    if ids.size and (ids.min() < 0 or ids.max() >= num_labels):
        raise ValueError(f"{task}: {what} must be class ids in [0, {num_labels - 1}], got {ids.min()}..{ids.max()}")
    return ids


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    dx = x - x.mean()
    dy = y - y.mean()
    denominator = np.sqrt((dx * dx).sum() * (dy * dy).sum())
    # Constant x or y: undefined, 0.0 by this module's rule (docstring).
    if denominator == 0 or not np.isfinite(denominator):
        return 0.0
    return float(np.clip((dx * dy).sum() / denominator, -1.0, 1.0))


def _ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties given their average rank (scipy.stats.rankdata's `average`)."""
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    # Start of each run of equal values; a run from i to j (exclusive) gets the rank (i + 1 + j) / 2.
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], len(x)]
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.repeat((starts + 1 + ends) / 2.0, ends - starts)
    return ranks


def _binary_counts(pred: np.ndarray, gold: np.ndarray) -> tuple[int, int, int, int]:
    tp = int(np.sum((pred == 1) & (gold == 1)))
    fp = int(np.sum((pred == 1) & (gold == 0)))
    fn = int(np.sum((pred == 0) & (gold == 1)))
    tn = int(np.sum((pred == 0) & (gold == 0)))
    return tp, fp, fn, tn


def _metrics(task: str, pred: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    out = {}
    for name in METRICS[task]:
        if name == "accuracy":
            out[name] = float(np.mean(pred == gold))
        elif name == "f1":
            tp, fp, fn, _ = _binary_counts(pred, gold)
            out[name] = 0.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)
        elif name == "matthews":
            tp, fp, fn, tn = _binary_counts(pred, gold)
            denominator = float(tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)
            out[name] = 0.0 if denominator == 0 else (tp * tn - fp * fn) / float(np.sqrt(denominator))
        elif name == "pearson":
            out[name] = _pearson(pred, gold)
        elif name == "spearman":
            out[name] = _pearson(_ranks(pred), _ranks(gold))
        else:  # a name in METRICS without code here is a bug of this module
            raise AssertionError(f"no code for GLUE metric {name!r}")
    return out


def _seed_mean(task: str, pred: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    per_seed = [_metrics(task, p, gold) for p in np.atleast_2d(pred)]
    return {name: float(np.mean([m[name] for m in per_seed])) for name in METRICS[task]}


def task_metrics(task: str, predictions, labels) -> dict[str, float]:
    """GLUE's metrics of `task` for 1-D predictions (class ids, or STS-B scores) against labels."""
    pred, gold = _check(task, predictions, labels)
    if pred.ndim != 1:
        raise ValueError(f"{task}: task_metrics takes 1-D predictions, got shape {pred.shape}; see bootstrap_metrics")
    return _metrics(task, pred, gold)


def _resamples(n_rows: int, n_boot: int, seed: int, level: float):
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    rng = np.random.default_rng(seed)
    for _ in range(n_boot):
        yield rng.integers(0, n_rows, size=n_rows)


def _interval(values: list[float], level: float) -> tuple[float, float]:
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(np.asarray(values), [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_metrics(
    task: str, predictions, labels, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, dict]:
    """{metric: {"value", "low", "high"}}: the seed-mean metric and its percentile bootstrap interval."""
    pred, gold = _check(task, predictions, labels)
    value = _seed_mean(task, pred, gold)
    boot = {name: [] for name in METRICS[task]}
    for idx in _resamples(len(gold), n_boot, seed, level):
        for name, v in _seed_mean(task, pred[..., idx], gold[idx]).items():
            boot[name].append(v)
    out = {}
    for name in METRICS[task]:
        low, high = _interval(boot[name], level)
        out[name] = {"value": value[name], "low": low, "high": high}
    return out


def paired_bootstrap(
    task: str, pred_a, pred_b, labels, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, dict]:
    """{metric: {"difference", "low", "high"}}: b minus a, both scored on the same resampled rows."""
    a, gold = _check(task, pred_a, labels)
    b, _ = _check(task, pred_b, labels)
    value_a, value_b = _seed_mean(task, a, gold), _seed_mean(task, b, gold)
    boot = {name: [] for name in METRICS[task]}
    for idx in _resamples(len(gold), n_boot, seed, level):
        ma, mb = _seed_mean(task, a[..., idx], gold[idx]), _seed_mean(task, b[..., idx], gold[idx])
        for name in METRICS[task]:
            boot[name].append(mb[name] - ma[name])
    out = {}
    for name in METRICS[task]:
        low, high = _interval(boot[name], level)
        out[name] = {"difference": value_b[name] - value_a[name], "low": low, "high": high}
    return out
