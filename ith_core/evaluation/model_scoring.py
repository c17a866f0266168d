"""Scoring one fusion model (trained or zero-shot) on one task's evaluated splits of the sampled
examples: encode every row (windowed when longer than `max_length`), predict, and account for
every row as scored or unscored with its reason (ith_core.stages.fusion.evaluate_system calls it).
"""

from __future__ import annotations

import torch

from ith_core.evaluation.scoring import predict
from ith_core.fusion.lm_inputs import ROW_DROP_REASONS, FusionCollator, encode_examples


def score_model(
    model,
    tokenizer,
    task: str,
    examples: list[dict],
    splits,
    spans,
    features,
    max_length: int,
    device: str,
    system: str,
    seed: int,
    scoring: dict,
    zero_shot: bool,
) -> list[dict]:
    """Predictions of one model on one task's evaluated splits; fills `scoring` (rows = scored + unscored)."""

    by_id = {r["example_id"]: r for r in examples}
    items = []
    for split in splits:
        rows = [r for r in examples if r["task"] == task and r["split"] == split]
        part, counts = encode_examples(tokenizer, rows, spans, max_length, use_audio=features is not None, mc=True)
        gold = [i for i in part if i.variant == "gold"]
        account = {
            "rows": len(rows),
            "scored": len(gold),
            "windowed": sum(i.windowed for i in gold),
            "unscored": {r: counts[r] for r in ROW_DROP_REASONS if counts.get(r)},
        }
        if account["rows"] != account["scored"] + sum(account["unscored"].values()):
            raise RuntimeError(
                f"{system} seed {seed} {task}/{split}: {account['rows']} rows but {account['scored']} "
                f"scored and {account['unscored']} unscored"
            )
        scoring[f"{task}/{split}"] = account
        items += part
    collator = FusionCollator(tokenizer.pad_token_id, features)
    with torch.no_grad():
        preds = predict(model, tokenizer, items, collator, by_id, device=device, model_name=system, seed=seed)
    encoded = {i.example_id for i in items if i.variant == "gold"}
    if sorted(p["example_id"] for p in preds) != sorted(encoded):
        raise RuntimeError(f"{system} seed {seed} {task}: {len(preds)} predictions for {len(encoded)} encoded rows")
    return preds
