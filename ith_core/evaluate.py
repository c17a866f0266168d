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
# Which published row each of our models corresponds to.
PAPER_ROW_FOR = {"ith": "ITH", "text": "BERT-base"}

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


def seed_summary(table: list[dict], with_paper: bool = True) -> list[dict]:
    """Mean and standard deviation over seeds per (model, task, split, metric), next to the paper."""
    groups: dict[tuple, list[float]] = defaultdict(list)
    for r in table:
        if r["accuracy"] is not None:
            groups[(r["model"], r["task"], r["split"], r["metric"])].append(r["accuracy"])
    out = []
    for (model, task, split, metric), accs in sorted(groups.items()):
        published = with_paper and metric != "mc4_accuracy"
        paper = PAPER_RESULTS.get(PAPER_ROW_FOR.get(model, ""), {}).get(f"{task}/{split}") if published else None
        out.append({"model": model, "task": task, "split": split, "metric": metric, "seeds": len(accs),
                    "mean": round(float(np.mean(accs)), 2), "std": round(float(np.std(accs)), 2),
                    "paper": paper, "paper_model": PAPER_ROW_FOR.get(model) if published else None})
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


def results_dict(table: list[dict], benchmark: str = "auditorybench") -> dict:
    """JSON-able summary for summary.json: ours vs paper, per task/split, plus every seed's row."""
    paper = benchmark == "auditorybench"
    note = ("paper columns: published AuditoryBench accuracies (ITH row for 'ith', BERT-base row for 'text'); "
            "mc4_accuracy is our second metric (4-way choice over options), not in the paper") if paper else \
        (f"benchmark {benchmark}: no published numbers exist for it; mc4_accuracy is a 4-way choice over options")
    return {"ours_vs_paper": seed_summary(table, with_paper=paper), "per_seed": table, "note": note}
