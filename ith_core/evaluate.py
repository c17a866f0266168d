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
import pyarrow as pa
import torch
from torch.utils.data import DataLoader

from ith_core.lm_data import EncodedItem, FusionDataset, pitch_token_ids

logger = logging.getLogger(__name__)

# Published accuracies (%) from the method file (Yoo, Ok, Lee 2025, AuditoryBench).
PAPER_RESULTS: dict[str, dict[str, float]] = {
    "BERT-base": {"animal/dev": 15.51, "animal/test": 13.46, "animal/wiki": 3.05,
                  "pitch/dev": 59.42, "pitch/test": 60.41, "pitch/wiki": 48.06},
    "RoBERTa-base": {"animal/dev": 14.67, "animal/test": 14.04, "animal/wiki": 2.54,
                     "pitch/dev": 54.50, "pitch/test": 55.84, "pitch/wiki": 47.45},
    "AudioBERT": {"animal/dev": 38.28, "animal/test": 36.63, "animal/wiki": 14.32,
                  "pitch/dev": 73.18, "pitch/test": 74.83, "pitch/wiki": 55.31},
    "ITH": {"animal/dev": 39.36, "animal/test": 41.55, "animal/wiki": 19.09,
            "pitch/dev": 79.82, "pitch/test": 78.96, "pitch/wiki": 76.74},
}

PREDICTION_SCHEMA = pa.schema([
    ("example_id", pa.string()), ("task", pa.string()), ("split", pa.string()), ("model", pa.string()),
    ("seed", pa.int64()), ("prediction", pa.string()), ("gold", pa.string()), ("correct", pa.bool_()),
    ("mc_prediction", pa.string()), ("mc_correct", pa.bool_()),
    ("spans_used", pa.list_(pa.string())), ("audio_ids", pa.list_(pa.string())),
])


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


def _move(batch: dict, device) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


@torch.no_grad()
def predict(model, tokenizer, items: list[EncodedItem], collator, examples_by_id: dict[str, dict],
            batch_size: int = 64, device: str | torch.device = "cpu", model_name: str = "ith", seed: int = 0) -> list[dict]:
    """One prediction row per example (gold variant), with the MC choice for animal rows."""
    model.eval()
    pitch_ids = None
    mc_scores: dict[str, dict[str, float]] = defaultdict(dict)
    gold_rows: dict[str, dict] = {}
    loader = DataLoader(FusionDataset(items), batch_size=batch_size, shuffle=False, collate_fn=collator)
    offset = 0
    for batch in loader:
        chunk = items[offset:offset + batch["input_ids"].shape[0]]
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
                        mc_scores[item.example_id][option] = logp[torch.arange(len(ids)), torch.tensor(ids)].mean().item()
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
                "example_id": item.example_id, "task": item.task, "split": item.split, "model": model_name,
                "seed": seed, "prediction": pred, "gold": item.answer, "correct": bool(correct),
                "mc_prediction": None, "mc_correct": None, "spans_used": list(item.span_texts),
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


def bootstrap_ci(correct: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                 clusters: np.ndarray | None = None) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of 0/1 outcomes (in %).

    `clusters` (one key per outcome): resample whole clusters, not outcomes - the right unit
    when outcomes within a cluster are dependent (the synthetic benchmark's rows of one source).
    """
    if len(correct) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    if clusters is None:
        idx = rng.integers(0, len(correct), size=(n_boot, len(correct)))
        means = correct[idx].mean(axis=1)
    else:
        _, group = np.unique(np.asarray(clusters), return_inverse=True)
        hits = np.bincount(group, weights=correct)
        sizes = np.bincount(group).astype(np.float64)
        idx = rng.integers(0, len(sizes), size=(n_boot, len(sizes)))
        means = hits[idx].sum(axis=1) / sizes[idx].sum(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(100 * lo), float(100 * hi)


def accuracy_table(predictions: list[dict], n_boot: int = 1000, seed: int = 0,
                   clusters: dict[str, str] | None = None) -> list[dict]:
    """Rows: model, seed, task, split, metric, n, accuracy (%), ci_low, ci_high (95% bootstrap).

    `clusters`: example id -> bootstrap unit (None: every example is its own unit); `units`
    counts the distinct units of each row.
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
            units = None if clusters is None else np.asarray([clusters[p["example_id"]] for p in chosen])
            lo, hi = bootstrap_ci(arr, n_boot, seed, clusters=units)
            rows.append({"model": model, "seed": int(run_seed), "task": task, "split": split, "metric": metric,
                         "n": int(len(arr)), "units": int(len(arr) if units is None else len(set(units.tolist()))),
                         "accuracy": round(100 * float(arr.mean()), 2) if len(arr) else None,
                         "ci_low": round(lo, 2), "ci_high": round(hi, 2)})
    return rows


def seed_summary(table: list[dict], published_rows: dict[str, str | None] | None = None) -> list[dict]:
    """Mean and standard deviation over seeds per (model, task, split, metric), next to the paper.

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
        out.append({"model": model, "task": task, "split": split, "metric": metric, "seeds": len(accs),
                    "mean": round(float(np.mean(accs)), 2), "std": round(float(np.std(accs)), 2),
                    "paper": paper, "paper_model": row if paper is not None else None})
    return out


def _aligned(predictions: list[dict], model: str, task: str, split: str, key: str) -> tuple[list[str], np.ndarray]:
    """(example ids, outcomes (seeds, rows)) of one model on one split, rows aligned across seeds."""
    by_seed: dict[int, dict[str, float]] = defaultdict(dict)
    for p in predictions:
        if p["model"] == model and p["task"] == task and p["split"] == split and p[key] is not None:
            by_seed[p["seed"]][p["example_id"]] = float(p[key])
    ids = sorted(set.intersection(*(set(v) for v in by_seed.values()))) if by_seed else []
    return ids, np.asarray([[by_seed[s][i] for i in ids] for s in sorted(by_seed)], dtype=np.float64)


def _unit_index(ids: list[str], clusters: dict[str, str] | None) -> tuple[np.ndarray, int]:
    if clusters is None:
        return np.arange(len(ids)), len(ids)
    _, group = np.unique(np.asarray([clusters[i] for i in ids]), return_inverse=True)
    return group, int(group.max()) + 1 if len(group) else 0


def _bootstrap_mean(values: np.ndarray, group: np.ndarray, n_units: int, n_boot: int, seed: int = 0,
                    level: float = 0.95) -> tuple[float, float]:
    """Percentile interval (in %) of the mean of `values` (per row), resampling whole units."""
    if len(values) == 0:
        return float("nan"), float("nan")
    sums = np.bincount(group, weights=values, minlength=n_units)
    sizes = np.bincount(group, minlength=n_units).astype(np.float64)
    idx = np.random.default_rng(seed).integers(0, n_units, size=(n_boot, n_units))
    means = sums[idx].sum(axis=1) / sizes[idx].sum(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(100 * lo), float(100 * hi)


def seed_mean_table(predictions: list[dict], n_boot: int = 1000, clusters: dict[str, str] | None = None,
                    seed: int = 0) -> list[dict]:
    """Per (model, task, split, metric): mean and sd of accuracy over seeds, and a 95 % interval of
    the seed-mean, bootstrapped over rows (or `clusters` units) with the same resample for every seed."""
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
            group, n_units = _unit_index(ids, clusters)
            lo, hi = _bootstrap_mean(outcomes.mean(axis=0), group, n_units, n_boot, seed)
            out.append({"model": model, "task": task, "split": split, "metric": metric, "seeds": len(accs),
                        "n": len(ids), "units": n_units, "mean": round(float(accs.mean()), 2),
                        "std": round(float(accs.std()), 2), "ci_low": round(lo, 2), "ci_high": round(hi, 2)})
    return out


def paired_comparisons(predictions: list[dict], pairs: list[tuple[str, str]], n_boot: int = 1000,
                       clusters: dict[str, str] | None = None, seed: int = 0) -> list[dict]:
    """Paired bootstrap of accuracy differences a - b (points) on the rows both systems scored.

    Each row's outcome is averaged over the system's seeds; resampling draws the same rows (or
    units) for both systems. `p_not_better`: the share of resamples where a does not beat b.
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
            diff = (out_a.mean(axis=0)[[pos_a[i] for i in common]] - out_b.mean(axis=0)[[pos_b[i] for i in common]])
            group, n_units = _unit_index(common, clusters)
            sums = np.bincount(group, weights=diff, minlength=n_units)
            sizes = np.bincount(group, minlength=n_units).astype(np.float64)
            idx = np.random.default_rng(seed).integers(0, n_units, size=(n_boot, n_units))
            boot = sums[idx].sum(axis=1) / sizes[idx].sum(axis=1)
            lo, hi = np.quantile(boot, [0.025, 0.975])
            out.append({"a": a, "b": b, "task": task, "split": split, "n": len(common), "units": n_units,
                        "difference": round(100 * float(diff.mean()), 2), "ci_low": round(100 * float(lo), 2),
                        "ci_high": round(100 * float(hi), 2), "p_not_better": round(float((boot <= 0).mean()), 4)})
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
        out[name] = {"answer": answer, "accuracy": round(100.0 * n / sum(counter.values()), 2),
                     "n": sum(counter.values())}
    return out


def results_dict(table: list[dict], benchmark: str = "auditorybench",
                 published_rows: dict[str, str | None] | None = None) -> dict:
    """JSON-able summary for summary.json: ours vs paper, per task/split, plus every seed's row."""
    paper = benchmark == "auditorybench"
    note = ("paper columns: published AuditoryBench accuracies of each system's row (BERT-base and RoBERTa-base "
            "for the zero-shot rows, AudioBERT, ITH); mc4_accuracy is our second metric (4-way choice over "
            "options), not in the paper") if paper else \
        (f"benchmark {benchmark}: no published numbers exist for it; mc4_accuracy is a 4-way choice over options")
    return {"ours_vs_paper": seed_summary(table, published_rows if paper else None), "per_seed": table, "note": note}
