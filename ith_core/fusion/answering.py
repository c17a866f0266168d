"""Answering the [MASK] of a free sentence with a loaded fusion model: sentence checks, heads, printing.

The driver of `ith predict` (`ith_core.stages.predict`) reads the run, imagines and encodes the
spans' audio and loads the models; what it does with one sentence and one loaded model is here.

Answers:
- pitch: the two classes {higher, lower} with their probabilities (softmax over those two
  tokens at the mask, the method's head).
- animal: the number of wordpieces of the answer is unknown at prediction time (the method puts
  one [MASK] per wordpiece of the *gold* name). Two rankings are given: `answers` ranks the
  animal names of the run's training data (ingest, train split), each scored by the mean
  log-probability of its wordpieces at as many masks (the benchmark's multiple-choice score,
  over all known names instead of 4 options; `probability` is the softmax of those scores over
  the names); `single_mask` is the top-k of the vocabulary at a single [MASK] (tokens of
  one-wordpiece names, and the first piece of longer ones).

Task: the `task` argument, else inferred: a sentence with the word "than" after the [MASK]
(a comparison, as every pitch sentence of AuditoryBench: "... has a [MASK] pitch than ...")
is pitch, any other is animal.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch

from ith_core.fusion.lm_inputs import EncodedItem, FusionCollator, SpanAudio, encode_one, pitch_token_ids, word_ids

MASK = "[MASK]"


class PredictInputError(ValueError):
    """A sentence cannot be predicted (no [MASK], several, empty); the message names it and where it is."""


# ---------------------------------------------------------------------------------------------
# Input


def infer_task(sentence: str) -> str:
    """pitch when "than" follows the [MASK] (a comparison), else animal."""
    after = sentence[sentence.find(MASK) + len(MASK) :] if MASK in sentence else sentence
    return "pitch" if re.search(r"\bthan\b", after, flags=re.IGNORECASE) else "animal"


def _describe(sentence: str, where: str | None) -> str:
    return f"{where}: {sentence!r}" if where else repr(sentence)


def check_sentences(sentences: Sequence[str], where: Sequence[str] | None = None) -> None:
    """Raises one `PredictInputError` listing every sentence without exactly one [MASK]."""
    problems = []
    for i, sentence in enumerate(sentences):
        label = where[i] if where else f"sentence {i + 1}"
        count = sentence.count(MASK)
        if not sentence.strip():
            problems.append(f"{label}: empty sentence")
        elif count == 0:
            problems.append(
                f"{_describe(sentence, label)} has no {MASK}; write {MASK} where the answer goes, "
                f"e.g. 'Rattle is the sound a {MASK} makes.'"
            )
        elif count > 1:
            problems.append(
                f"{_describe(sentence, label)} has {count} {MASK} tokens; use exactly one (an animal "
                "name of several wordpieces is handled by the predictor)"
            )
    if problems:
        raise PredictInputError("\n".join(problems))


def read_sentence_file(path: str | Path) -> tuple[list[str], list[str]]:
    """(sentences, "path:line" labels): one sentence per line; blank lines and lines starting with # skipped."""
    sentences, where = [], []
    data = Path(path).read_bytes()
    try:
        content = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise PredictInputError(
            f"{path} is not UTF-8 text: byte offset {error.start} (line {line}) is "
            f"{data[error.start : error.start + 1]!r}; save the file as UTF-8"
        ) from None
    for number, line in enumerate(content.splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        sentences.append(text)
        where.append(f"{path}:{number}")
    if not sentences:
        raise PredictInputError(f"{path} holds no sentence (blank lines and lines starting with # are skipped)")
    return sentences, where


# ---------------------------------------------------------------------------------------------
# The language models


def _items(
    tokenizer, sentence: str, task: str, lengths: Sequence[int], spans: list[dict], use_audio: bool, max_length: int
) -> tuple[list, Counter]:
    """One EncodedItem per mask count, with the spans that have fused audio (none for text-only)."""
    span_audio = [
        SpanAudio(
            span_index=s["span_index"],
            span_text=s["text"],
            char_start=s["char_start"],
            char_end=s["char_end"],
            audio_id=s["fused_audio_id"],
        )
        for s in spans
        if use_audio and s["fused_audio_id"]
    ]
    counts: Counter = Counter()
    items = []
    for n in lengths:
        encoded = encode_one(tokenizer, sentence, [tokenizer.mask_token_id] * n, span_audio, max_length, counts)
        if encoded is None:
            continue
        input_ids, mask_positions, positions, kept = encoded
        items.append(
            EncodedItem(
                example_id=f"mask{n}",
                task=task,
                split="predict",
                input_ids=input_ids,
                labels=[-100] * len(input_ids),
                mask_positions=mask_positions,
                target_ids=[tokenizer.mask_token_id] * n,
                span_positions=positions,
                span_audio_ids=[s.audio_id for s in kept],
                span_texts=[s.span_text for s in kept],
            )
        )
    return items, counts


def _logits(model, batch: dict, device: str):
    with torch.no_grad():
        batch = {k: v.to(device) for k, v in batch.items()}
        batch.pop("labels", None)
        return model(**batch).logits.float().cpu()


def answer(
    model,
    tokenizer,
    sentence: str,
    task: str,
    spans: list[dict],
    features,
    use_audio: bool,
    animals: Sequence[str],
    top_k: int,
    max_length: int,
    device: str,
) -> dict:
    """Top answers for the mask of one sentence from one model (see the module docstring for the heads)."""

    collator = FusionCollator(tokenizer.pad_token_id, features if use_audio else None)
    at = sentence.find(MASK)
    after_space = at > 0 and sentence[at - 1].isspace()
    if task == "pitch":
        items, counts = _items(tokenizer, sentence, task, [1], spans, use_audio, max_length)
        if not items:
            raise PredictInputError(f"{sentence!r}: its masks alone exceed max_length={max_length} tokens")
        ids = pitch_token_ids(tokenizer)
        logits = _logits(model, collator(items), device)[0, items[0].mask_positions[0]]
        probs = torch.softmax(torch.stack([logits[ids[w]] for w in ("higher", "lower")]), dim=0).tolist()
        answers = sorted(
            ({"answer": w, "probability": round(p, 6)} for w, p in zip(("higher", "lower"), probs)),
            key=lambda a: -a["probability"],
        )
        return {"answers": answers, "spans_fused": items[0].span_texts, "dropped": dict(counts)}
    pieces = {name: word_ids(tokenizer, name, after_space) for name in animals}
    lengths = sorted({1, *(len(p) for p in pieces.values() if p)})
    items, counts = _items(tokenizer, sentence, task, lengths, spans, use_audio, max_length)
    if not items:
        raise PredictInputError(f"{sentence!r}: its masks alone exceed max_length={max_length} tokens")
    logits = _logits(model, collator(items), device)
    by_length = {
        len(it.mask_positions): torch.log_softmax(logits[b, it.mask_positions], dim=-1) for b, it in enumerate(items)
    }
    scored = []
    for name, ids in pieces.items():
        logp = by_length.get(len(ids))
        if ids and logp is not None:
            scored.append((logp[torch.arange(len(ids)), torch.tensor(ids)].mean().item(), name, len(ids)))
    scored.sort(key=lambda s: (-s[0], s[1]))
    norm = torch.softmax(torch.tensor([s[0] for s in scored]), dim=0).tolist() if scored else []
    answers = [
        {"answer": name, "mean_logprob": round(score, 4), "probability": round(p, 6), "wordpieces": n}
        for (score, name, n), p in zip(scored[:top_k], norm[:top_k])
    ]
    single = by_length[1][0].clone()
    special = [i for i in tokenizer.all_special_ids if i is not None and 0 <= i < single.shape[0]]
    single[special] = float("-inf")
    top = torch.topk(single, min(top_k, single.shape[0]))
    single_mask = [
        {"answer": tokenizer.convert_ids_to_tokens(int(i)), "probability": round(float(v.exp()), 6)}
        for v, i in zip(top.values, top.indices)
    ]
    one = next(it for it in items if len(it.mask_positions) == 1)
    return {"answers": answers, "single_mask": single_mask, "spans_fused": one.span_texts, "dropped": dict(counts)}


# ---------------------------------------------------------------------------------------------
# Printing


def format_prediction(result: dict) -> str:
    """A human-readable block for one sentence."""
    head = f"{result['where']}: " if result.get("where") else ""
    lines = [
        f"{head}{result['sentence']}",
        f"  task: {result['task']}{' (inferred)' if result['task_inferred'] else ''}",
    ]
    if not result["spans"]:
        lines.append("  spans: none detected: nothing to imagine, both models read the text only")
    for s in result["spans"]:
        lines.append(
            f"  span {s['span_index']}: {s['text']!r} (chars {s['char_start']}-{s['char_end']}, "
            f"detector {s['detector_score']:.2f})"
        )
        lines.append(f"    prompt {s['prompt']!r} -> audio id {s['audio_id']} ({s['source']})")
        scores = ", ".join(f"{v:.3f}" for v in s["clap_scores"])
        if s["fused"]:
            lines.append(
                f"    chosen candidate {s['candidate']} (CLAP {s['clap_score']:.3f} >= threshold "
                f"{s['threshold']:.3f}; scores {scores})"
            )
            lines.append(f"    wav: {s['audio_path']}")
        else:
            lines.append(f"    no candidate passed (CLAP scores {scores} < threshold {s['threshold']:.3f}): not fused")
            lines.append(f"    wavs: {', '.join(s['candidate_paths'])}")
    for key, title in (("with_audio", "with audio (ITH)"), ("without_audio", "without audio (text-only)")):
        out = result[key]
        answers = ", ".join(f"{a['answer']} {a['probability']:.3f}" for a in out["answers"])
        lines.append(f"  {title} [{out['job']}]: {answers}")
        if "single_mask" in out:
            single = ", ".join(f"{a['answer']} {a['probability']:.3f}" for a in out["single_mask"])
            lines.append(f"    single [MASK] over the vocabulary: {single}")
    return "\n".join(lines)


def to_json(results: list[dict]) -> str:
    return json.dumps(results, indent=2, default=str)


__all__ = [
    "MASK",
    "PredictInputError",
    "answer",
    "check_sentences",
    "format_prediction",
    "infer_task",
    "read_sentence_file",
    "to_json",
]
