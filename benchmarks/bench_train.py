"""Fusion training and audio precompute throughput on the tiny profile (CPU is fine).

Measures, in one process so the numbers compare:
- bare PyTorch loop: the fusion LM (`train_fusion.build_model`), its DataLoader
  (`train_fusion.get_dataloaders`), AdamW + cosine schedule, `loss.backward()`: the baseline;
- the same loop through Accelerate (`accelerator.prepare`, `accelerator.backward`): the
  overhead of Accelerate itself (target < 10 %);
- the real entry point `train_fusion.train_job` (adds the per-epoch dev pass, save_state and the
  dev-best save): what a training run costs end to end;
- `audio_encoding.precompute_audio_features`: audios/s (WAV read, resample, AST, shard write);
- peak memory: process peak RSS (`resource.getrusage`, covers torch) and the Python-heap peak
  per phase (`tracemalloc`: numpy and Python objects, not torch's allocator).

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_train.py [--examples 256] [--json]

The tiny profile is built (or reused) in $ITH_HOME from the benchmark copy's train sentences.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
import tracemalloc
import wave
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402

WORDS = ["dog", "cat", "bird", "whistle", "horn", "bell", "drum", "siren", "cow", "duck", "owl", "wolf"]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def make_data(root: Path, n_examples: int, n_audios: int, duration_s: float, rate: int) -> dict:
    """Pitch examples, each with one span that has a (sine) audio; WAVs 16-bit stereo at `rate`."""
    wavs = root / "wavs"
    wavs.mkdir(parents=True)
    for a in range(n_audios):
        t = np.arange(int(duration_s * rate)) / rate
        tone = 0.4 * np.sin(2 * np.pi * (150 + 37 * a) * t)
        with wave.open(str(wavs / f"{a}.wav"), "wb") as w:
            w.setnchannels(2)
            w.setsampwidth(2)
            w.setframerate(rate)
            w.writeframes((np.stack([tone, tone], 1) * 32767).astype("<i2").tobytes())
    examples, selection = [], []
    rng = np.random.default_rng(0)
    for i in range(n_examples):
        split = "train" if i < n_examples * 3 // 4 else "dev"
        word = WORDS[i % len(WORDS)]
        sentence = f"The sound of a {word} is [MASK] than the sound of a bell."
        example_id = f"bench/{split}/{i:05d}"
        examples.append(
            {
                "example_id": example_id,
                "task": "pitch",
                "split": split,
                "sentence": sentence,
                "answer": "higher" if rng.random() < 0.5 else "lower",
                "options": None,
                "flags": [],
            }
        )
        start = sentence.index(word)
        a = i % n_audios
        selection.append(
            {
                "example_id": example_id,
                "task": "pitch",
                "split": split,
                "span_index": 0,
                "span_text": word,
                "char_start": start,
                "char_end": start + len(word),
                "audio_id": f"audio-{a}",
                "audio_path": str(wavs / f"{a}.wav"),
                "sample_rate": rate,
            }
        )
    pq.write_table(pa.Table.from_pylist(examples), root / "examples.parquet")
    pq.write_table(pa.Table.from_pylist(selection), root / "selection.parquet")
    return {"examples": str(root / "examples.parquet"), "selection": str(root / "selection.parquet")}


class _OneProcess:
    num_processes = 1


def timed_loop(model, loader, optimizer, scheduler, backward, epochs: int, sampler) -> tuple[float, int]:
    """Seconds and samples over `epochs` epochs, the first 2 steps excluded (warm-up)."""
    model.train()
    seen, step, started = 0, 0, None
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for batch in loader:
            if step == 2:
                started = time.perf_counter()
            out = model(**batch)
            backward(out.loss)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            if started is not None:
                seen += batch["input_ids"].shape[0]
            step += 1
    return time.perf_counter() - started, seen


def run_loop(spec, job, accelerate: bool) -> float:
    from transformers import get_cosine_schedule_with_warmup

    from ith_core.fusion.training import build_model, feature_reader, get_dataloaders

    torch.manual_seed(job.seed)
    features = feature_reader(spec)
    model, tokenizer = build_model(spec, job, features)
    cfg = spec.fusion_config
    if accelerate:
        from accelerate import Accelerator

        accelerator = Accelerator(cpu=True, mixed_precision="no")
        train_dl, _, sampler, _ = get_dataloaders(accelerator, spec, job, tokenizer, features)
    else:
        train_dl, _, sampler, _ = get_dataloaders(_OneProcess(), spec, job, tokenizer, features)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=cfg.weight_decay)
    total = len(train_dl) * cfg.epochs
    scheduler = get_cosine_schedule_with_warmup(optimizer, int(0.1 * total), total)
    if accelerate:
        model, optimizer, train_dl, scheduler = accelerator.prepare(model, optimizer, train_dl, scheduler)
        backward = accelerator.backward
    else:

        def backward(loss):
            loss.backward()

    seconds, seen = timed_loop(model, train_dl, optimizer, scheduler, backward, cfg.epochs, sampler)
    return seen / seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=256, help="pitch examples (3/4 train, 1/4 dev)")
    parser.add_argument("--audios", type=int, default=64, help="distinct audios to encode")
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per audio (tiny imagine: 2 s)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2, help="bare/accelerate measurements, best kept")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    from ith_core.config import FusionConfig
    from ith_core.data import auditorybench
    from ith_core.fusion.audio_features import precompute_audio_features, read_selection
    from ith_core.fusion.training import TrainJob, TrainSpec, train_job
    from ith_core.models import profiles
    from ith_core.models.profiles import load_audio_encoder
    from storage.features import FeatureStore
    from storage.layout import RunLayout

    train_rows = auditorybench.ingest(auditorybench.locate(None), splits=("train",)).examples
    corpus = list(train_rows["sentence"].to_pylist()) + [s for sp in train_rows["spans"].to_pylist() for s in sp]
    paths = profiles.ensure_tiny_profile(corpus)
    results: dict = {"torch_threads": torch.get_num_threads(), "device": "cpu"}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = make_data(root, args.examples, args.audios, args.duration, 44100)
        rows = read_selection(data["selection"])

        # -- precompute ---------------------------------------------------------------------------
        encoder, extractor = load_audio_encoder(paths["audio_encoder"])
        tracemalloc.start()
        store = FeatureStore(RunLayout(str(root), "run"), "features")
        pre = precompute_audio_features(
            rows, encoder, extractor, store, trainable_encoder=False, audio_tokens=8, batch_size=16, shard_size=256
        )
        results["precompute"] = {
            "audios": pre["audios_encoded"],
            "audio_s": args.duration,
            "audios_per_s": pre["audios_per_s"],
            "seconds": pre["seconds"],
            "python_heap_peak_mib": round(tracemalloc.get_traced_memory()[1] / 2**20, 1),
            "peak_rss_mib": round(peak_rss_mib(), 1),
        }
        tracemalloc.stop()

        # -- training: bare vs Accelerate vs the entry point -------------------------------------------
        fusion = FusionConfig(
            num_heads=4,
            ffn_dim=256,
            audio_tokens=8,
            learning_rates={"pitch": 1e-3},
            batch_size=32,
            epochs=args.epochs,
            mixed_precision="no",
        )
        spec = TrainSpec(
            lm_path=str(paths["lm"]),
            examples_path=data["examples"],
            output_dir=str(root / "train"),
            selection_path=data["selection"],
            features_dir=str(root / "run" / "features"),
            fusion={k: getattr(fusion, k) for k in fusion.__dataclass_fields__},
        )
        job = TrainJob("pitch", "ith", 0)
        bare, accel = [], []
        tracemalloc.start()
        for _ in range(args.repeats):
            bare.append(run_loop(spec, job, accelerate=False))
            accel.append(run_loop(spec, job, accelerate=True))
        loop_heap = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        report = train_job(spec, job)
        best_bare, best_accel = max(bare), max(accel)
        results["train"] = {
            "train_examples": args.examples * 3 // 4,
            "batch_size": 32,
            "epochs": args.epochs,
            "bare_samples_per_s": round(best_bare, 1),
            "accelerate_samples_per_s": round(best_accel, 1),
            "accelerate_vs_bare": round(best_accel / best_bare, 3),
            "accelerate_overhead_pct": round(100 * (best_bare / best_accel - 1), 1),
            "all_bare": [round(x, 1) for x in bare],
            "all_accelerate": [round(x, 1) for x in accel],
            "entry_point_samples_per_s": report["train_samples_per_s"],
            "entry_point_vs_bare": round(report["train_samples_per_s"] / best_bare, 3),
            "entry_point_seconds": report["seconds"],
            "python_heap_peak_mib": round(loop_heap / 2**20, 1),
            "peak_rss_mib": round(peak_rss_mib(), 1),
        }
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        p, t = results["precompute"], results["train"]
        print(
            f"precompute: {p['audios']} audios of {p['audio_s']} s in {p['seconds']} s = {p['audios_per_s']} audios/s; "
            f"python heap peak {p['python_heap_peak_mib']} MiB, peak RSS {p['peak_rss_mib']} MiB"
        )
        print(f"train (fusion LM, {t['train_examples']} examples x {t['epochs']} epochs, batch 32, CPU):")
        print(f"  bare PyTorch loop      {t['bare_samples_per_s']:8.1f} samples/s  (1.000)  runs {t['all_bare']}")
        print(
            f"  Accelerate loop        {t['accelerate_samples_per_s']:8.1f} samples/s  ({t['accelerate_vs_bare']:.3f})  "
            f"runs {t['all_accelerate']}; overhead {t['accelerate_overhead_pct']} % (target < 10 %)"
        )
        print(
            f"  train_job entry point  {t['entry_point_samples_per_s']:8.1f} samples/s  ({t['entry_point_vs_bare']:.3f})  "
            "incl. per-epoch dev pass, save_state and dev-best save"
        )
        print(f"  python heap peak {t['python_heap_peak_mib']} MiB, process peak RSS {t['peak_rss_mib']} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
