"""Scoring of the fusion LM: per-example predictions, accuracy with 95% bootstrap intervals, paper table.

Metrics (the method's heads):
- animal `exact_match`: one mask per wordpiece of the gold animal; argmax over the full
  vocabulary at every mask; correct only if every mask matches.
- pitch `accuracy`: argmax over the two tokens {lower, higher} at the mask.
- animal `mc4_accuracy` (second metric, not in the paper): each of the 4 options is scored by the
  mean log-probability of its wordpieces at as many masks; the highest wins. Gold is the option
  equal to the `animal` column (compared case-folded, whitespace collapsed), the benchmark's gold
  answer, NOT the option `answer_letter` points to: rows flagged `answer_letter_mismatch` are
  therefore scored against `animal`, and counted (`mc_letter_mismatch_rows`). Rows whose animal is
  not among the options (`animal_not_in_options`) are left out of this metric and counted.

    rows = predict(model, tokenizer, items, collator, examples_by_id)
    table = accuracy_table(rows, n_boot=1000)
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict

import numpy as np
import torch
from torch.utils.data import DataLoader

from ith_core.data.synthetic import bootstrap_unit
from ith_core.fusion.lm_inputs import EncodedItem, FusionDataset, pitch_token_ids

logger = logging.getLogger(__name__)

# Published accuracies (%) from the method file (Yoo, Ok, Lee 2025, AuditoryBench).
PAPER_RESULTS: dict[str, dict[str, float]] = {
    "BERT-base": {
        "animal/dev": 15.51,
        "animal/test": 13.46,
        "animal/wiki": 3.05,
        "pitch/dev": 59.42,
        "pitch/test": 60.41,
        "pitch/wiki": 48.06,
    },
    "RoBERTa-base": {
        "animal/dev": 14.67,
        "animal/test": 14.04,
        "animal/wiki": 2.54,
        "pitch/dev": 54.50,
        "pitch/test": 55.84,
        "pitch/wiki": 47.45,
    },
    "AudioBERT": {
        "animal/dev": 38.28,
        "animal/test": 36.63,
        "animal/wiki": 14.32,
        "pitch/dev": 73.18,
        "pitch/test": 74.83,
        "pitch/wiki": 55.31,
    },
    "ITH": {
        "animal/dev": 39.36,
        "animal/test": 41.55,
        "animal/wiki": 19.09,
        "pitch/dev": 79.82,
        "pitch/test": 78.96,
        "pitch/wiki": 76.74,
    },
}


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


def _move(batch: dict, device) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


@torch.no_grad()
def predict(
    model,
    tokenizer,
    items: list[EncodedItem],
    collator,
    examples_by_id: dict[str, dict],
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    model_name: str = "ith",
    seed: int = 0,
) -> list[dict]:
    """One prediction row per example (gold variant), with the MC choice for animal rows."""
    model.eval()
    pitch_ids = None
    mc_scores: dict[str, dict[str, float]] = defaultdict(dict)
    gold_rows: dict[str, dict] = {}
    loader = DataLoader(FusionDataset(items), batch_size=batch_size, shuffle=False, collate_fn=collator)
    offset = 0
    for batch in loader:
        chunk = items[offset : offset + batch["input_ids"].shape[0]]
        offset += len(chunk)
        batch = _move(batch, device)
        batch.pop("labels")
        logits = model(**batch).logits.float()
        for b, item in enumerate(chunk):
            at_masks = logits[b, item.mask_positions]  # (n masks, V)
            row = examples_by_id[item.example_id]
            if item.task == "animal" and row.get("options"):
                logp = torch.log_softmax(at_masks, dim=-1)
                after_space = _after_space(row["sentence"])
                for option in row["options"]:
                    ids = tokenizer((" " + option) if after_space else option, add_special_tokens=False)["input_ids"]
                    if len(ids) == len(item.mask_positions):
                        mc_scores[item.example_id][option] = (
                            logp[torch.arange(len(ids)), torch.tensor(ids)].mean().item()
                        )
            if item.variant != "gold":
                continue
            if item.task == "pitch":
                pitch_ids = pitch_ids or pitch_token_ids(tokenizer)
                pred = "higher" if at_masks[0, pitch_ids["higher"]] > at_masks[0, pitch_ids["lower"]] else "lower"
                correct = pred == item.answer
            else:
                pred_ids = at_masks.argmax(-1).tolist()
                pred = tokenizer.decode(pred_ids).strip()
                correct = pred_ids == item.target_ids
            gold_rows[item.example_id] = {
                "example_id": item.example_id,
                "task": item.task,
                "split": item.split,
                "model": model_name,
                "seed": seed,
                "prediction": pred,
                "gold": item.answer,
                "correct": bool(correct),
                "mc_prediction": None,
                "mc_correct": None,
                "spans_used": list(item.span_texts),
                "audio_ids": list(item.span_audio_ids),
            }
    for example_id, scores in mc_scores.items():
        row = examples_by_id[example_id]
        out = gold_rows.get(example_id)
        if out is None or len(scores) != len(row["options"]):
            continue
        golds = [o for o in row["options"] if _norm(o) == _norm(row["answer"])]
        if not golds:
            continue  # animal_not_in_options: no MC gold
        choice = max(row["options"], key=lambda o: scores[o])
        out["mc_prediction"] = choice
        out["mc_correct"] = _norm(choice) == _norm(row["answer"])
    return list(gold_rows.values())


def _after_space(sentence: str) -> bool:
    at = sentence.find("[MASK]")
    return at > 0 and sentence[at - 1].isspace()


# What every interval resamples. Outcomes are not independent: rows that share a gold sound
# description share its imagined clip (AuditoryBench animal test: 1211 rows over 651
# descriptions, "chirping" alone 73 rows), and a pitch row holds two sounds, each shared with
# other rows. So rows are resampled by unit: one factor (a cluster bootstrap) or two crossed
# factors, each resampled on its own (Owen's pigeonhole bootstrap, Ann. Appl. Stat. 2007), a
# row weighing the product of its levels' draw counts. Over seeds, the hierarchical bootstrap
# draws the seeds first (with replacement), then the units.
UNIT_NAMES = {
    "auditorybench": {"animal": "gold description", "pitch": "gold span1 x gold span2 (crossed)"},
    "synthetic": {"animal": "source name", "pitch": "source name"},
}
INTERVALS = {
    "per_seed": (
        "95 % percentile bootstrap over units of one (system, seed): conditional on that seed's trained "
        "checkpoint, it shows only the sampling of benchmark rows"
    ),
    "over_seeds": (
        "95 % percentile hierarchical bootstrap: seeds drawn with replacement, then units; it adds "
        "seed-to-seed training variance to the sampling of rows (with 3 seeds, a coarse picture of it)"
    ),
    "paired": (
        "difference a - b of seed-mean accuracies on the rows both scored; hierarchical bootstrap, each "
        "system's seeds drawn on their own, the same units for both; p_not_better = share of resamples "
        "where a does not beat b (a one-sided bootstrap p-value under the same conditions)"
    ),
    "sd": "sample standard deviation over seeds (ddof 1)",
}


def bootstrap_units(examples: list[dict], benchmark: str = "auditorybench") -> dict[str, str | tuple[str, ...]]:
    """Example id -> its bootstrap unit (`UNIT_NAMES`): AuditoryBench animal rows by their gold
    description, pitch rows by their two gold spans as crossed factors (case-folded, whitespace
    collapsed); synthetic rows by their source name."""
    if benchmark == "synthetic":
        return {r["example_id"]: bootstrap_unit(r) for r in examples}
    out: dict[str, str | tuple[str, ...]] = {}
    for r in examples:
        spans = [_norm(s) for s in r.get("spans") or []]
        if r["task"] == "pitch":
            out[r["example_id"]] = tuple((spans + ["", ""])[:2])
        else:
            out[r["example_id"]] = spans[0] if spans else r["example_id"]
    return out


def unit_phrase(units: dict | str | None) -> str:
    """The bootstrap unit of results.json in words: one per task, or one for every task."""
    if not units:
        return "examples"
    if isinstance(units, str):
        return f"{units}s"
    names = sorted(set(units.values()))
    if len(names) == 1:
        return f"{names[0]}s"
    return "units (" + "; ".join(f"{task} rows by {name}" for task, name in units.items()) + ")"


def unit_weights(units: list | np.ndarray | None, n_rows: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n_rows) bootstrap weights of rows: every row once (`units` None: rows drawn with
    replacement), or per unit factor a multinomial draw over its levels, multiplied across factors.

    `units`: one key per row, a string (one factor) or a tuple (crossed factors, same length).
    """
    if units is None:  # n rows drawn with replacement: each row's draw count
        return rng.multinomial(n_rows, np.full(n_rows, 1.0 / n_rows), size=n_boot).astype(np.float64)
    keys = [k if isinstance(k, tuple) else (k,) for k in units]
    weights = np.ones((n_boot, n_rows))
    for factor in range(len(keys[0]) if keys else 0):
        _, codes = np.unique(np.asarray([k[factor] for k in keys], dtype=object).astype(str), return_inverse=True)
        levels = int(codes.max()) + 1
        counts = rng.multinomial(levels, np.full(levels, 1.0 / levels), size=n_boot)
        weights *= counts[:, codes]
    return weights


def _percentile(means: np.ndarray, level: float) -> tuple[float, float]:
    means = means[np.isfinite(means)]  # crossed draws can leave a resample with no row at all
    if len(means) == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(100 * lo), float(100 * hi)


def _weighted_means(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    total = weights.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (weights * values).sum(axis=1) / total, np.nan)


def bootstrap_ci(
    correct: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    clusters: list | np.ndarray | None = None,
) -> tuple[float, float]:
    """Percentile bootstrap interval (in %) of the mean of 0/1 outcomes of one (system, seed).

    `clusters` (one key per outcome, a string or a tuple of crossed factors): resample units, not
    outcomes - the right unit when outcomes within a unit are dependent (see `unit_weights`).
    """
    if len(correct) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    weights = unit_weights(None if clusters is None else list(clusters), len(correct), n_boot, rng)
    return _percentile(_weighted_means(np.asarray(correct, dtype=np.float64), weights), level)


def accuracy_table(
    predictions: list[dict], n_boot: int = 1000, seed: int = 0, clusters: dict[str, str | tuple] | None = None
) -> list[dict]:
    """Rows: model, seed, task, split, metric, n, accuracy (%), ci_low, ci_high (95% bootstrap).

    `clusters`: example id -> bootstrap unit (None: every example is its own unit); `units`
    counts the distinct units of each row. The interval is conditional on the seed's checkpoint.
    """
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for p in predictions:
        groups[(p["model"], p["seed"], p["task"], p["split"])].append(p)
    rows = []
    for (model, run_seed, task, split), preds in sorted(groups.items()):
        metrics = [("exact_match" if task == "animal" else "accuracy", preds)]
        if task == "animal":
            metrics.append(("mc4_accuracy", [p for p in preds if p["mc_correct"] is not None]))
        for metric, chosen in metrics:
            key = "mc_correct" if metric == "mc4_accuracy" else "correct"
            arr = np.asarray([p[key] for p in chosen], dtype=np.float64)
            units = None if clusters is None else [clusters[p["example_id"]] for p in chosen]
            lo, hi = bootstrap_ci(arr, n_boot, seed, clusters=units)
            rows.append(
                {
                    "model": model,
                    "seed": int(run_seed),
                    "task": task,
                    "split": split,
                    "metric": metric,
                    "n": int(len(arr)),
                    "units": int(len(arr) if units is None else len(set(units))),
                    "accuracy": round(100 * float(arr.mean()), 2) if len(arr) else None,
                    "ci_low": round(lo, 2),
                    "ci_high": round(hi, 2),
                }
            )
    return rows


def sample_sd(values) -> float | None:
    """Sample standard deviation (ddof 1); None for fewer than two values."""
    values = np.asarray(values, dtype=np.float64)
    return round(float(values.std(ddof=1)), 2) if len(values) > 1 else None


def seed_summary(table: list[dict], published_rows: dict[str, str | None] | None = None) -> list[dict]:
    """Mean and sample standard deviation over seeds per (model, task, split, metric), next to the paper.

    `published_rows`: model -> its row in PAPER_RESULTS (None: no published counterpart); None
    attaches no published numbers (another benchmark than AuditoryBench).
    """
    groups: dict[tuple, list[float]] = defaultdict(list)
    for r in table:
        if r["accuracy"] is not None:
            groups[(r["model"], r["task"], r["split"], r["metric"])].append(r["accuracy"])
    out = []
    for (model, task, split, metric), accs in sorted(groups.items()):
        row = (published_rows or {}).get(model) if metric != "mc4_accuracy" else None
        paper = PAPER_RESULTS.get(row or "", {}).get(f"{task}/{split}")
        out.append(
            {
                "model": model,
                "task": task,
                "split": split,
                "metric": metric,
                "seeds": len(accs),
                "mean": round(float(np.mean(accs)), 2),
                "std": sample_sd(accs),
                "paper": paper,
                "paper_model": row if paper is not None else None,
            }
        )
    return out


def _aligned(predictions: list[dict], model: str, task: str, split: str, key: str) -> tuple[list[str], np.ndarray]:
    """(example ids, outcomes (seeds, rows)) of one model on one split, rows aligned across seeds."""
    by_seed: dict = defaultdict(dict)
    for p in predictions:
        if p["model"] == model and p["task"] == task and p["split"] == split and p[key] is not None:
            by_seed[p["seed"]][p["example_id"]] = float(p[key])
    ids = sorted(set.intersection(*(set(v) for v in by_seed.values()))) if by_seed else []
    return ids, np.asarray(
        [[by_seed[s][i] for i in ids] for s in sorted(by_seed, key=lambda s: (s is None, s))], dtype=np.float64
    )


def _seed_weights(n_seeds: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n_seeds) draw counts of seeds resampled with replacement."""
    return rng.multinomial(n_seeds, np.full(n_seeds, 1.0 / n_seeds), size=n_boot).astype(np.float64)


def _hierarchical_means(outcomes: np.ndarray, seed_w: np.ndarray, row_w: np.ndarray) -> np.ndarray:
    """Per resample: the seed-weighted mean over seeds of each row, then the unit-weighted mean over rows."""
    per_row = (seed_w @ outcomes) / seed_w.sum(axis=1, keepdims=True)  # (n_boot, rows)
    return _weighted_means(per_row, row_w)


def seed_mean_table(
    predictions: list[dict], n_boot: int = 1000, clusters: dict[str, str | tuple] | None = None, seed: int = 0
) -> list[dict]:
    """Per (model, task, split, metric): mean and sample sd of accuracy over seeds, and a 95 %
    interval of the seed-mean from the hierarchical bootstrap (seeds, then rows or `clusters` units)."""
    out = []
    keys = sorted({(p["model"], p["task"], p["split"]) for p in predictions})
    for model, task, split in keys:
        metrics = [("exact_match" if task == "animal" else "accuracy", "correct")]
        if task == "animal":
            metrics.append(("mc4_accuracy", "mc_correct"))
        for metric, key in metrics:
            ids, outcomes = _aligned(predictions, model, task, split, key)
            if not ids:
                continue
            accs = 100 * outcomes.mean(axis=1)
            rng = np.random.default_rng(seed)
            units = None if clusters is None else [clusters[i] for i in ids]
            seed_w = _seed_weights(len(outcomes), n_boot, rng)
            row_w = unit_weights(units, len(ids), n_boot, rng)
            lo, hi = _percentile(_hierarchical_means(outcomes, seed_w, row_w), 0.95)
            out.append(
                {
                    "model": model,
                    "task": task,
                    "split": split,
                    "metric": metric,
                    "seeds": len(accs),
                    "n": len(ids),
                    "units": len(ids) if units is None else len(set(units)),
                    "mean": round(float(accs.mean()), 2),
                    "std": sample_sd(accs),
                    "ci_low": round(lo, 2),
                    "ci_high": round(hi, 2),
                }
            )
    return out


def paired_comparisons(
    predictions: list[dict],
    pairs: list[tuple[str, str]],
    n_boot: int = 1000,
    clusters: dict[str, str | tuple] | None = None,
    seed: int = 0,
) -> list[dict]:
    """Paired hierarchical bootstrap of accuracy differences a - b (points) on the rows both scored.

    Each resample draws a's seeds and b's seeds with replacement (independent training runs) and
    one set of units for both systems. `p_not_better`: the share of resamples where a does not beat b.
    """
    out = []
    models = {p["model"] for p in predictions}
    for a, b in pairs:
        if a not in models or b not in models:
            continue
        for task, split in sorted({(p["task"], p["split"]) for p in predictions if p["model"] == a}):
            ids_a, out_a = _aligned(predictions, a, task, split, "correct")
            ids_b, out_b = _aligned(predictions, b, task, split, "correct")
            common = sorted(set(ids_a) & set(ids_b))
            if not common:
                continue
            pos_a, pos_b = {i: k for k, i in enumerate(ids_a)}, {i: k for k, i in enumerate(ids_b)}
            out_a, out_b = out_a[:, [pos_a[i] for i in common]], out_b[:, [pos_b[i] for i in common]]
            rng = np.random.default_rng(seed)
            units = None if clusters is None else [clusters[i] for i in common]
            seed_a, seed_b = _seed_weights(len(out_a), n_boot, rng), _seed_weights(len(out_b), n_boot, rng)
            row_w = unit_weights(units, len(common), n_boot, rng)
            boot = _hierarchical_means(out_a, seed_a, row_w) - _hierarchical_means(out_b, seed_b, row_w)
            boot = boot[np.isfinite(boot)]
            lo, hi = np.quantile(boot, [0.025, 0.975])
            out.append(
                {
                    "a": a,
                    "b": b,
                    "task": task,
                    "split": split,
                    "n": len(common),
                    "units": len(common) if units is None else len(set(units)),
                    "seeds_a": len(out_a),
                    "seeds_b": len(out_b),
                    "difference": round(100 * float(out_a.mean() - out_b.mean()), 2),
                    "ci_low": round(100 * float(lo), 2),
                    "ci_high": round(100 * float(hi), 2),
                    "p_not_better": round(float((boot <= 0).mean()), 4),
                }
            )
    return out


def majority_baseline(examples: list[dict], splits) -> dict[str, dict]:
    """Per "task/split": the most frequent gold answer and its share (%), what one constant answer scores."""
    counts: dict[str, Counter] = defaultdict(Counter)
    for row in examples:
        if row["split"] in splits:
            counts[f"{row['task']}/{row['split']}"][_norm(row["answer"])] += 1
    out = {}
    for name, counter in sorted(counts.items()):
        answer, n = counter.most_common(1)[0]
        out[name] = {
            "answer": answer,
            "accuracy": round(100.0 * n / sum(counter.values()), 2),
            "n": sum(counter.values()),
        }
    return out


def results_dict(
    table: list[dict], benchmark: str = "auditorybench", published_rows: dict[str, str | None] | None = None
) -> dict:
    """JSON-able summary for summary.json: ours vs paper, per task/split, plus every seed's row."""
    paper = benchmark == "auditorybench"
    note = (
        (
            "paper columns: published AuditoryBench accuracies of each system's row (BERT-base and RoBERTa-base "
            "for the zero-shot rows, AudioBERT, ITH); mc4_accuracy is our second metric (4-way choice over "
            "options), not in the paper"
        )
        if paper
        else (f"benchmark {benchmark}: no published numbers exist for it; mc4_accuracy is a 4-way choice over options")
    )
    return {"ours_vs_paper": seed_summary(table, published_rows if paper else None), "per_seed": table, "note": note}
