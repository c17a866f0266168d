"""The key test: on a task only the audio can answer, ITH beats the text-only baseline by a wide margin.

Sentences compare the pitch of a made-up sound name with a whistle ("The sound of a zorblat is
[MASK] than the sound of a whistle."). A test-only generator backend renders each name as a tone
of a hidden frequency and writes WAVs plus a selection table per the imagination stage's
contract. Dev and test use names never seen in training, half above and half below the
whistle's 1 kHz, so text alone cannot beat 50 %. Everything runs through the real code:
WAV reading and resampling, AST encoding into feature shards, the fusion LM, the accelerate
training loop with dev-best selection, the saved checkpoint, and the scorer.

What made it pass (it sat at exactly 50 % before): the frozen tiny AST's tokens are dominated by
what every clip shares; the tone's pitch lives in a deviation about 5x smaller, in few
coordinates. Fed raw to the projector it moved the logits by < 1e-3 and training never grew it.
The projector now standardises its input per token position and channel with the training
audios' statistics (`AudioProjector`, `audio_feature_statistics`); with identity statistics
this very setup stays at 50.0 % on test (seed 42), with them it reaches 87-94 % (seeds 42, 1, 7).
"""

from __future__ import annotations

import itertools
import json
import random
import time
import wave
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

# Made-up names spelled in Georgian letters, which the tiny tokenizer (trained on English
# AuditoryBench text) has never seen: every name is one [UNK], so the text cannot tell names
# apart and only the audio can answer.
SYLLABLES = ["ႠႡ", "ႢႣ", "ႤႥ", "ႦႧ", "ႨႩ", "ႪႫ", "ႬႭ", "ႮႯ", "ႰႱ", "ႲႳ", "ႴႵ", "ႶႷ", "ႸႹ", "ႺႻ", "ႼႽ", "ႾႿ",
             "ჀჁ", "ჂჃ", "ჄჅ", "ⴀⴁ"]
TEMPLATE = "The sound of a {a} is [MASK] than the sound of a {b}."
SYNTH_RATE = 22050


def _names(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    names: set[str] = set()
    while len(names) < n:
        names.add("".join(rng.sample(SYLLABLES, 2)))
    return sorted(names)


def _write_tone(path: Path, freq: float, index: int, duration_s: float) -> None:
    t = np.arange(int(duration_s * SYNTH_RATE)) / SYNTH_RATE
    tone = 0.5 * np.sin(2 * np.pi * freq * t)
    if index % 2 == 0:  # 16-bit PCM stereo
        data = (np.stack([tone, tone], axis=1) * 32767).astype(np.int16)
        with wave.open(str(path), "wb") as w:
            w.setnchannels(2)
            w.setsampwidth(2)
            w.setframerate(SYNTH_RATE)
            w.writeframes(data.tobytes())
    else:  # float mono
        from scipy.io import wavfile

        wavfile.write(str(path), SYNTH_RATE, tone.astype(np.float32))


TEMPLATES = ("The sound of a {a} is [MASK] than the sound of a whistle.",
             "A {a} sounds [MASK] than a whistle.",
             "Compared with a whistle, the {a} is [MASK].",
             "Listen: the {a} is [MASK] than the whistle.")
REFERENCE_HZ = 1000.0


def make_task(root: Path, n_train_names: int = 96, n_heldout_names: int = 48, seed: int = 0,
              duration_s: float = 4.0) -> dict:
    """Writes WAVs, examples.parquet and selection.parquet; returns their paths and the split sizes.

    Each sentence compares a made-up sound with a whistle (1 kHz, never rendered: its span has no
    accepted audio). The answer is "higher" when the name's hidden tone is above 1 kHz. Names are
    split into train / dev / test; each split has as many names above as below 1 kHz, so a
    constant answer scores exactly 50 % and the name's spelling carries no information.
    """
    rng = random.Random(seed)
    names = _names(n_train_names + n_heldout_names, seed)
    rng.shuffle(names)
    n_dev = n_heldout_names // 3
    groups = {"train": names[:n_train_names], "dev": names[n_train_names:n_train_names + n_dev],
              "test": names[n_train_names + n_dev:]}
    freqs: dict[str, float] = {}
    for split, members in groups.items():
        for i, name in enumerate(members):
            low, high = (np.log(250), np.log(900)) if i % 2 == 0 else (np.log(1110), np.log(4000))
            freqs[name] = float(np.exp(rng.uniform(low, high)))
    audio_dir = root / "wavs"
    audio_dir.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        _write_tone(audio_dir / f"{name}.wav", freqs[name], i, duration_s)

    examples, selection = [], []
    for split, members in groups.items():
        for k, (name, template) in enumerate(itertools.product(members, TEMPLATES)):
            example_id = f"synth/{split}/{k:05d}"
            sentence = template.format(a=name)
            examples.append({"example_id": example_id, "task": "pitch", "split": split, "sentence": sentence,
                             "answer": "higher" if freqs[name] > REFERENCE_HZ else "lower", "options": None,
                             "flags": []})
            start = sentence.index(name)
            selection.append({"example_id": example_id, "task": "pitch", "split": split, "span_index": 0,
                              "span_text": name, "char_start": start, "char_end": start + len(name),
                              "audio_id": f"tone-{name}", "audio_path": str(audio_dir / f"{name}.wav"),
                              "sample_rate": SYNTH_RATE})
            start = sentence.index("whistle")
            # The reference sound got no accepted audio: it must be left untouched, not crash.
            selection.append({"example_id": example_id, "task": "pitch", "split": split, "span_index": 1,
                              "span_text": "whistle", "char_start": start, "char_end": start + len("whistle"),
                              "audio_id": None, "audio_path": None, "sample_rate": None})
    pq.write_table(pa.Table.from_pylist(examples), root / "examples.parquet")
    pq.write_table(pa.Table.from_pylist(selection), root / "selection.parquet")
    return {"examples": str(root / "examples.parquet"), "selection": str(root / "selection.parquet"),
            "sizes": {k: len(v) * len(TEMPLATES) for k, v in groups.items()}, "freqs": freqs}


def synthetic_fusion_settings(**overrides) -> dict:
    """Tiny-suitable settings (the tiny LM has hidden 64 and 4 heads); everything else as the method.

    20 epochs of 12 steps: the random-init LM first spends ~80 steps learning to answer
    lower/higher at all, and only then reads the span; 8 epochs stopped before that.
    """
    return {"num_heads": 4, "ffn_dim": 256, "audio_tokens": 24, "learning_rates": {"pitch": 2e-3},
            "epochs": 20, "batch_size": 32, "mixed_precision": "no", "bootstrap_samples": 200, **overrides}


def precompute(task: dict, tiny_models, out_root: Path, audio_tokens: int | None) -> str:
    from ith_core.audio_encoding import precompute_audio_features, read_selection
    from ith_core.profiles import load_audio_encoder
    from storage.features import FeatureStore
    from storage.layout import RunLayout

    encoder, extractor = load_audio_encoder(tiny_models["audio_encoder"])
    layout = RunLayout(str(out_root), "run")
    store = FeatureStore(layout, "audio_features")
    report = precompute_audio_features(read_selection(task["selection"]), encoder, extractor, store,
                                       trainable_encoder=False, audio_tokens=audio_tokens, batch_size=16, shard_size=16)
    assert report["audios_encoded"] == report["audios"]
    return layout.path("audio_features")


@pytest.mark.slow
def test_ith_beats_text_only_on_audio_only_task(tmp_path, tiny_models):
    from ith_core.evaluate import accuracy_table, predict
    from ith_core.lm_data import FusionCollator, encode_examples, spans_from_selection
    from ith_core.audio_encoding import read_selection
    from ith_core.train_fusion import TrainJob, TrainSpec, feature_reader, load_best, run

    started = time.perf_counter()
    task = make_task(tmp_path)
    settings = synthetic_fusion_settings()
    features_dir = precompute(task, tiny_models, tmp_path, settings["audio_tokens"])
    spec = TrainSpec(lm_path=str(tiny_models["lm"]), examples_path=task["examples"], output_dir=str(tmp_path / "train"),
                     selection_path=task["selection"], features_dir=features_dir, fusion=settings,
                     jobs=(TrainJob("pitch", "ith", 42), TrainJob("pitch", "text", 42)))
    reports = run(spec)
    features = feature_reader(spec)
    spans = spans_from_selection(read_selection(task["selection"]))
    rows = pq.read_table(task["examples"]).to_pylist()
    test_rows = [r for r in rows if r["split"] == "test"]
    by_id = {r["example_id"]: r for r in rows}
    preds = []
    for job in spec.jobs:
        model, tokenizer, saved = load_best(Path(spec.output_dir) / job.name)
        use_audio = job.model == "ith"
        items, _ = encode_examples(tokenizer, test_rows, spans, 128, use_audio=use_audio)
        collator = FusionCollator(tokenizer.pad_token_id, features if use_audio else None)
        preds += predict(model, tokenizer, items, collator, by_id, model_name=job.model, seed=job.seed)
    table = {r["model"]: r for r in accuracy_table(preds, n_boot=200)}
    elapsed = time.perf_counter() - started
    print(json.dumps({"test": table, "dev_best": {r["job"]: r["best_dev"] for r in reports}, "seconds": elapsed}))
    assert table["ith"]["n"] == table["text"]["n"] == task["sizes"]["test"]
    # Every ITH prediction used its name's audio (the whistle has none); the text-only model used none.
    assert all(len(p["audio_ids"]) == 1 for p in preds if p["model"] == "ith")
    assert all(not p["audio_ids"] for p in preds if p["model"] == "text")
    # Every test name is [UNK] to the tokenizer and the splits are balanced: the text-only model
    # can only give one answer everywhere (50 %). ITH scored 89.1 / 93.8 / 87.5 % (seeds 42 / 1 / 7)
    # when this bound was set, so 25 points is the requirement with ~12 points of slack.
    assert 35 <= table["text"]["accuracy"] <= 65, table
    assert table["ith"]["accuracy"] >= table["text"]["accuracy"] + 25, table
    assert table["ith"]["ci_low"] > table["text"]["ci_high"], table
