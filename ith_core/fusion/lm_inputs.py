"""Examples -> LM inputs for the fusion model: masks per task, span token positions, audio batches.

- animal: the sentence's `[MASK]` is repeated once per wordpiece of the gold animal name (the
  method's head); labels are those wordpieces. The 4-way multiple-choice metric builds one
  variant per option length (`mc_variants`).
- pitch: one mask, label = the token of the gold word (`higher`/`lower`); the prediction is the
  argmax over those two tokens only.

Span character offsets (from the selection table, in the original sentence) are shifted past the
repeated masks and mapped to token positions through the fast tokenizer's offset mapping, so
any BERT-family tokenizer works (WordPiece or byte-level BPE). Spans without audio never reach
this module.

A sentence longer than `max_length` tokens is not cut at its end but windowed: the model sees
`max_length` tokens (special tokens included) around the masks, covering the spans too where
they fit, and span positions are those inside the window. So every row whose masks fit in
`max_length` is scored. A row is left out only when its masks alone do not fit (counted as
`masks_exceed_max_length`); a span with no token in the window is left out of fusion and counted
(`span_outside_window`).

    items, counts = encode_examples(tokenizer, examples, spans_by_example, max_length=128)
    loader = DataLoader(FusionDataset(items), batch_size=32, collate_fn=FusionCollator(tokenizer, features))
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch.utils.data import Dataset, Sampler

logger = logging.getLogger(__name__)

MASK_TEXT = "[MASK]"
# Why a row can be left out of training or scoring (`encode_one`).
ROW_DROP_REASONS = ("no_mask", "masks_exceed_max_length")
PITCH_WORDS = ("lower", "higher")


@dataclass(frozen=True)
class SpanAudio:
    """One detected span of an example with its accepted audio (the selection-table row)."""

    span_index: int
    span_text: str
    char_start: int
    char_end: int
    audio_id: str


@dataclass
class EncodedItem:
    example_id: str
    task: str
    split: str
    input_ids: list[int]
    labels: list[int]  # -100 except at the masks
    mask_positions: list[int]
    target_ids: list[int]  # gold wordpieces (animal) or the gold word's token (pitch)
    span_positions: list[list[int]] = field(default_factory=list)
    span_audio_ids: list[str] = field(default_factory=list)
    span_texts: list[str] = field(default_factory=list)
    answer: str = ""
    variant: str = "gold"  # "gold", or "mc:<n masks>" for the multiple-choice variants
    windowed: bool = False  # the sentence was longer than max_length: a window around the masks


class FeatureSource(Protocol):
    def get(self, audio_id: str) -> torch.Tensor: ...


def word_ids(tokenizer, word: str, after_space: bool = True) -> list[int]:
    """Token ids of `word` as it appears in a sentence (byte-level BPE marks a leading space)."""
    return tokenizer((" " + word) if after_space else word, add_special_tokens=False)["input_ids"]


def pitch_token_ids(tokenizer) -> dict[str, int]:
    """{"lower": id, "higher": id}; each word must be one token for the pitch head."""
    ids = {}
    for word in PITCH_WORDS:
        pieces = word_ids(tokenizer, word)
        if len(pieces) != 1:
            raise ValueError(
                f"pitch head: tokenizer splits {word!r} into {len(pieces)} tokens {pieces}; the method "
                "scores the argmax over the two single tokens 'lower'/'higher' - use a tokenizer "
                "whose vocabulary holds both words"
            )
        ids[word] = pieces[0]
    return ids


def _window(length: int, budget: int, masks: list[int], spans: list[list[int]]) -> int:
    """Start of a `budget`-token window holding every mask, centred on the masks and spans together
    when they fit, else on the masks."""
    first, last = masks[0], masks[-1]
    cover = [i for positions in spans for i in positions] + masks
    if max(cover) - min(cover) < budget:
        first, last = min(cover), max(cover)
    preferred = (first + last + 1) // 2 - budget // 2
    start = min(max(preferred, masks[-1] - budget + 1), masks[0])  # every mask inside
    return max(0, min(start, length - budget))


def encode_one(
    tokenizer, sentence: str, target_ids: list[int], spans: list[SpanAudio], max_length: int, counts: Counter
) -> tuple[list[int], list[int], list[list[int]], list[SpanAudio]] | None:
    """(input_ids, mask positions, span token positions, kept spans), or None (counted) when the row
    has no mask or its masks alone exceed `max_length`. A longer sentence is windowed around the
    masks (`counts["windowed"]`)."""
    at = sentence.find(MASK_TEXT)
    if at < 0:
        counts["no_mask"] += 1
        return None
    n = len(target_ids)
    replacement = " ".join([tokenizer.mask_token] * n)
    text = sentence[:at] + replacement + sentence[at + len(MASK_TEXT) :]
    shift = len(replacement) - len(MASK_TEXT)
    enc = tokenizer(text, return_offsets_mapping=True, return_special_tokens_mask=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    # The tokens the post-processor adds ([CLS]/[SEP], <s>/</s>) come before and after the text's.
    text_tokens = [i for i, flag in enumerate(enc["special_tokens_mask"]) if not flag]
    lo, hi = text_tokens[0], text_tokens[-1] + 1
    if text_tokens != list(range(lo, hi)):
        raise ValueError(
            f"{type(tokenizer).__name__} puts special tokens inside a single sentence; "
            "the fusion LM needs a BERT-style single-sequence template"
        )
    budget = max_length - (len(ids) - (hi - lo))
    masks = [i for i in range(lo, hi) if ids[i] == tokenizer.mask_token_id]
    if len(masks) != n or masks[-1] - masks[0] + 1 > budget:
        counts["masks_exceed_max_length"] += 1
        return None
    span_tokens: list[list[int]] = []
    for span in spans:
        start = span.char_start + (shift if span.char_start >= at + len(MASK_TEXT) else 0)
        end = span.char_end + (shift if span.char_end > at else 0)
        # An [UNK] covering a span's characters is a real span token.
        span_tokens.append(
            [
                i
                for i in range(lo, hi)
                if offsets[i][1] > offsets[i][0] and offsets[i][0] < end and offsets[i][1] > start
            ]
        )
    keep = list(range(len(ids)))
    if hi - lo > budget:
        begin = lo + _window(hi - lo, budget, [m - lo for m in masks], [[i - lo for i in t] for t in span_tokens if t])
        keep = list(range(lo)) + list(range(begin, begin + budget)) + list(range(hi, len(ids)))
        counts["windowed"] += 1
    new_position = {old: new for new, old in enumerate(keep)}
    input_ids = [ids[i] for i in keep]
    mask_positions = [new_position[i] for i in masks]
    positions: list[list[int]] = []
    kept: list[SpanAudio] = []
    for span, toks in zip(spans, span_tokens):
        inside = [new_position[i] for i in toks if i in new_position]
        if not toks:
            counts["span_without_tokens"] += 1
            continue
        if not inside:
            counts["span_outside_window"] += 1
            continue
        positions.append(inside)
        kept.append(span)
    return input_ids, mask_positions, positions, kept


def encode_examples(
    tokenizer,
    examples: list[dict],
    spans_by_example: dict[str, list[SpanAudio]],
    max_length: int,
    use_audio: bool = True,
    mc: bool = False,
) -> tuple[list[EncodedItem], dict]:
    """Encodes examples (dicts with example_id, task, split, sentence, answer[, options]).

    `use_audio=False` gives the text-only baseline's items (no spans). `mc=True` adds one
    variant per distinct option length for animal rows (the multiple-choice metric).
    Returns the items and counts, from the gold variant of each row: rows left out by reason
    (`ROW_DROP_REASONS`), spans left out by reason, and `windowed` (rows kept, windowed);
    `mc_variant_dropped` counts multiple-choice variants left out (those rows get no MC score).
    """
    counts: Counter = Counter()
    items: list[EncodedItem] = []
    pitch_ids = None
    for row in examples:
        task = row["task"]
        sentence = row["sentence"]
        after_space = sentence.find(MASK_TEXT) > 0 and sentence[sentence.find(MASK_TEXT) - 1].isspace()
        if task == "pitch":
            pitch_ids = pitch_ids or pitch_token_ids(tokenizer)
            targets_by_variant = {"gold": [pitch_ids[row["answer"]]]}
        else:
            targets_by_variant = {"gold": word_ids(tokenizer, row["answer"], after_space)}
            if mc and row.get("options"):
                for option in row["options"]:
                    n = len(word_ids(tokenizer, option, after_space))
                    if n != len(targets_by_variant["gold"]):
                        targets_by_variant.setdefault(f"mc:{n}", [tokenizer.mask_token_id] * n)
        spans = spans_by_example.get(row["example_id"], []) if use_audio else []
        for variant, targets in targets_by_variant.items():
            variant_counts = counts if variant == "gold" else Counter()
            windowed_before = variant_counts["windowed"]
            encoded = encode_one(tokenizer, sentence, targets, spans, max_length, variant_counts)
            if encoded is None:
                if variant != "gold":
                    counts["mc_variant_dropped"] += 1
                continue
            input_ids, mask_positions, positions, kept = encoded
            labels = [-100] * len(input_ids)
            if variant == "gold":
                for pos, tid in zip(mask_positions, targets):
                    labels[pos] = tid
            items.append(
                EncodedItem(
                    example_id=row["example_id"],
                    task=task,
                    split=row["split"],
                    input_ids=input_ids,
                    labels=labels,
                    mask_positions=mask_positions,
                    target_ids=list(targets),
                    span_positions=positions,
                    span_audio_ids=[s.audio_id for s in kept],
                    span_texts=[s.span_text for s in kept],
                    answer=row["answer"],
                    variant=variant,
                    windowed=variant_counts["windowed"] > windowed_before,
                )
            )
    return items, dict(counts)


class FusionDataset(Dataset):
    def __init__(self, items: list[EncodedItem]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> EncodedItem:
        return self.items[index]


class EpochPermutationSampler(Sampler[int]):
    """A shuffle that depends only on (seed, epoch): a resumed run replays the same order, so
    skipping the finished batches of the interrupted epoch skips exactly the examples seen."""

    def __init__(self, n: int, seed: int) -> None:
        self.n = n
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


class FusionCollator:
    """Pads token ids and gathers each batch's distinct audios once (spans may share audio).

    Batch keys (tensors): input_ids, attention_mask, labels, span_batch (S,), span_positions
    (S, Lt), span_position_mask (S, Lt), span_audio (S,), audio_tokens (A, La, D), audio_mask
    (A, La), item_index (B,). `features=None` (text-only) gives no span keys.
    """

    def __init__(self, pad_token_id: int, features: FeatureSource | None, audio_dtype: torch.dtype = torch.float32):
        self.pad_token_id = pad_token_id
        self.features = features
        self.audio_dtype = audio_dtype

    def __call__(self, items: list[EncodedItem]) -> dict[str, torch.Tensor]:
        length = max(len(it.input_ids) for it in items)
        ids = torch.full((len(items), length), self.pad_token_id, dtype=torch.long)
        att = torch.zeros((len(items), length), dtype=torch.long)
        labels = torch.full((len(items), length), -100, dtype=torch.long)
        for b, it in enumerate(items):
            n = len(it.input_ids)
            ids[b, :n] = torch.tensor(it.input_ids)
            att[b, :n] = 1
            labels[b, :n] = torch.tensor(it.labels)
        batch: dict[str, Any] = {"input_ids": ids, "attention_mask": att, "labels": labels}
        if self.features is None:
            return batch
        audio_order: dict[str, int] = {}
        span_rows, span_pos, span_audio = [], [], []
        for b, it in enumerate(items):
            for positions, audio_id in zip(it.span_positions, it.span_audio_ids):
                span_rows.append(b)
                span_pos.append(positions)
                span_audio.append(audio_order.setdefault(audio_id, len(audio_order)))
        max_span = max((len(p) for p in span_pos), default=1)
        positions_t = torch.zeros((len(span_pos), max_span), dtype=torch.long)
        position_mask = torch.zeros((len(span_pos), max_span), dtype=torch.bool)
        for s, positions in enumerate(span_pos):
            positions_t[s, : len(positions)] = torch.tensor(positions)
            position_mask[s, : len(positions)] = True
        tensors = [self.features.get(a) for a in audio_order]
        if tensors:
            la = max(t.shape[0] for t in tensors)
            audio = torch.zeros((len(tensors), la, *tensors[0].shape[1:]), dtype=self.audio_dtype)
            audio_mask = torch.zeros((len(tensors), la), dtype=torch.bool)
            for a, t in enumerate(tensors):
                audio[a, : t.shape[0]] = t.to(self.audio_dtype)
                audio_mask[a, : t.shape[0]] = True
        else:
            audio = torch.zeros((0, 1, 1), dtype=self.audio_dtype)
            audio_mask = torch.zeros((0, 1), dtype=torch.bool)
        batch.update(
            {
                "span_batch": torch.tensor(span_rows, dtype=torch.long),
                "span_positions": positions_t,
                "span_position_mask": position_mask,
                "span_audio": torch.tensor(span_audio, dtype=torch.long),
                "audio_tokens": audio,
                "audio_mask": audio_mask,
            }
        )
        return batch


def spans_from_selection(rows: list[dict]) -> dict[str, list[SpanAudio]]:
    """example_id -> spans with accepted audio (rows without audio are left out: no fusion)."""
    out: dict[str, list[SpanAudio]] = {}
    for r in sorted(rows, key=lambda r: (r["example_id"], r["span_index"])):
        if r.get("audio_id") is None:
            continue
        out.setdefault(r["example_id"], []).append(
            SpanAudio(
                span_index=int(r["span_index"]),
                span_text=r["span_text"],
                char_start=int(r["char_start"]),
                char_end=int(r["char_end"]),
                audio_id=str(r["audio_id"]),
            )
        )
    return out
