"""A small pitch task with WAVs, an examples table and a selection table, for the mechanics tests of
the fusion stages (precompute shards, resume, dev-best, two processes).

Sentences compare a made-up sound name with a whistle; each name is rendered as a tone of a hidden
frequency (above or below 1 kHz). Half the WAVs are 16-bit stereo, half float mono, drawn at random
independently of the answer. This is a fixture for mechanics, not evidence of learning: the
planted-signal evidence is `ith run --benchmark synthetic` (tests/test_synthetic_benchmark.py).
"""

from __future__ import annotations

import itertools
import random
import wave
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

# Made-up names spelled in Georgian letters, which the tiny tokenizer (trained on English
# AuditoryBench text) has never seen: every name is one [UNK].
SYLLABLES = [
    "ႠႡ",
    "ႢႣ",
    "ႤႥ",
    "ႦႧ",
    "ႨႩ",
    "ႪႫ",
    "ႬႭ",
    "ႮႯ",
    "ႰႱ",
    "ႲႳ",
    "ႴႵ",
    "ႶႷ",
    "ႸႹ",
    "ႺႻ",
    "ႼႽ",
    "ႾႿ",
    "ჀჁ",
    "ჂჃ",
    "ჄჅ",
    "ⴀⴁ",
]
TEMPLATES = (
    "The sound of a {a} is [MASK] than the sound of a whistle.",
    "A {a} sounds [MASK] than a whistle.",
    "Compared with a whistle, the {a} is [MASK].",
    "Listen: the {a} is [MASK] than the whistle.",
)
REFERENCE_HZ = 1000.0
SYNTH_RATE = 22050
# The training entry point the launch tests start: the trainer's own `main` plus fault hooks.
FAULTS = Path(__file__).with_name("train_with_faults.py")


def _names(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    names: set[str] = set()
    while len(names) < n:
        names.add("".join(rng.sample(SYLLABLES, 2)))
    return sorted(names)


def _write_tone(path: Path, freq: float, stereo_pcm16: bool, duration_s: float) -> None:
    t = np.arange(int(duration_s * SYNTH_RATE)) / SYNTH_RATE
    tone = 0.5 * np.sin(2 * np.pi * freq * t)
    if stereo_pcm16:
        data = (np.stack([tone, tone], axis=1) * 32767).astype(np.int16)
        with wave.open(str(path), "wb") as w:
            w.setnchannels(2)
            w.setsampwidth(2)
            w.setframerate(SYNTH_RATE)
            w.writeframes(data.tobytes())
    else:
        from scipy.io import wavfile

        wavfile.write(str(path), SYNTH_RATE, tone.astype(np.float32))


def make_task(
    root: Path, n_train_names: int = 96, n_heldout_names: int = 48, seed: int = 0, duration_s: float = 4.0
) -> dict:
    """Writes WAVs, examples.parquet and selection.parquet; returns their paths and the split sizes."""
    rng = random.Random(seed)
    names = _names(n_train_names + n_heldout_names, seed)
    rng.shuffle(names)
    n_dev = n_heldout_names // 3
    groups = {
        "train": names[:n_train_names],
        "dev": names[n_train_names : n_train_names + n_dev],
        "test": names[n_train_names + n_dev :],
    }
    freqs: dict[str, float] = {}
    for split, members in groups.items():
        for i, name in enumerate(members):
            low, high = (np.log(250), np.log(900)) if i % 2 == 0 else (np.log(1110), np.log(4000))
            freqs[name] = float(np.exp(rng.uniform(low, high)))
    audio_dir = root / "wavs"
    audio_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        _write_tone(audio_dir / f"{name}.wav", freqs[name], rng.random() < 0.5, duration_s)

    examples, selection = [], []
    for split, members in groups.items():
        for k, (name, template) in enumerate(itertools.product(members, TEMPLATES)):
            example_id = f"synth/{split}/{k:05d}"
            sentence = template.format(a=name)
            examples.append(
                {
                    "example_id": example_id,
                    "task": "pitch",
                    "split": split,
                    "sentence": sentence,
                    "answer": "higher" if freqs[name] > REFERENCE_HZ else "lower",
                    "options": None,
                    "flags": [],
                }
            )
            start = sentence.index(name)
            selection.append(
                {
                    "example_id": example_id,
                    "task": "pitch",
                    "split": split,
                    "span_index": 0,
                    "span_text": name,
                    "char_start": start,
                    "char_end": start + len(name),
                    "audio_id": f"tone-{name}",
                    "audio_path": str(audio_dir / f"{name}.wav"),
                    "sample_rate": SYNTH_RATE,
                }
            )
            start = sentence.index("whistle")
            # The reference sound got no accepted audio: it must be left untouched, not crash.
            selection.append(
                {
                    "example_id": example_id,
                    "task": "pitch",
                    "split": split,
                    "span_index": 1,
                    "span_text": "whistle",
                    "char_start": start,
                    "char_end": start + len("whistle"),
                    "audio_id": None,
                    "audio_path": None,
                    "sample_rate": None,
                }
            )
    pq.write_table(pa.Table.from_pylist(examples), root / "examples.parquet")
    pq.write_table(pa.Table.from_pylist(selection), root / "selection.parquet")
    return {
        "examples": str(root / "examples.parquet"),
        "selection": str(root / "selection.parquet"),
        "sizes": {k: len(v) * len(TEMPLATES) for k, v in groups.items()},
        "freqs": freqs,
    }


def fusion_settings(**overrides) -> dict:
    """Tiny-suitable fusion settings (the tiny LM has hidden 64 and 4 heads), frozen encoder."""
    return {
        "num_heads": 4,
        "ffn_dim": 256,
        "audio_tokens": 24,
        "learning_rates": {"pitch": 2e-3},
        "train_audio_encoder": False,
        "epochs": 20,
        "batch_size": 32,
        "mixed_precision": "no",
        "bootstrap_samples": 200,
        **overrides,
    }


def small_task_with_features(root: Path, tiny_models: dict) -> dict:
    """A 24 + 6 name task with the tiny AST's tokens precomputed (shards of 4), for the training tests."""
    from ith_core.fusion.audio_features import precompute_audio_features, read_selection
    from ith_core.models.profiles import load_audio_encoder
    from storage.features import FeatureStore
    from storage.layout import RunLayout

    task = make_task(root, n_train_names=24, n_heldout_names=6, duration_s=1.0)
    encoder, extractor = load_audio_encoder(tiny_models["audio_encoder"])
    store = FeatureStore(RunLayout(str(root), "run"), "audio_features")
    report = precompute_audio_features(
        read_selection(task["selection"]),
        encoder,
        extractor,
        store,
        trainable_encoder=False,
        audio_tokens=8,
        batch_size=4,
        shard_size=4,
    )
    return {**task, "root": root, "features_dir": str(root / "run" / "audio_features"), "report": report}


def train_spec(task, tiny_models, out, **kw):
    from ith_core.fusion.training import TrainJob, TrainSpec

    fusion = fusion_settings(**{"epochs": 2, "batch_size": 16, "audio_tokens": 8, **kw.pop("fusion", {})})
    return TrainSpec(
        lm_path=str(tiny_models["lm"]),
        examples_path=task["examples"],
        output_dir=str(out),
        selection_path=task["selection"],
        features_dir=task["features_dir"],
        fusion=fusion,
        jobs=kw.pop("jobs", (TrainJob("pitch", "ith", 7),)),
        **kw,
    )
