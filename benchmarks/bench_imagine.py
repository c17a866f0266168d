"""Stages 2-3 speed: a reference-style loop against the imagine stage, on the same model and prompts.

    .venv/bin/python benchmarks/bench_imagine.py                  # tiny profile, CPU
    .venv/bin/python benchmarks/bench_imagine.py --full-size      # stable-audio-open-1.0 and CLAP
                                                                  # shapes, random weights (GPU)

Reference-style loop (as the official release does it): one prompt per pipeline call, the
candidates of that prompt, the model's whole latent window cropped to the duration, no
deduplication, every candidate written to a WAV file and read back for CLAP scoring.
The stage: `ith_core.imagine_stage` drivers (plan, shards, batched prompts, scoring from
memory, the audio store) with `--latent-length` (default exact).

Both paths run the same sample of distinct prompts in this process; the script prints the
per-prompt wall-time ratio, the model-time share of the stage, and the dedup ratio measured
over every gold span of AuditoryBench (all tasks and splits, no generation). The whole-
benchmark ratio is their product: the reference generates every span occurrence, the stage
every distinct prompt once.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import torch  # noqa: E402

from ith_core import auditorybench, imagine_stage, profiles  # noqa: E402
from ith_core.clap_scoring import ClapScorer  # noqa: E402
from ith_core.config import RunConfig  # noqa: E402
from ith_core.imagine import normalize_span  # noqa: E402
from storage.audio_store import pcm16, read_wav, wav_bytes  # noqa: E402
from storage.layout import RunLayout  # noqa: E402


def benchmark_spans(data_dir: str) -> tuple[list[str], float]:
    """All gold span occurrences of AuditoryBench and the ratio occurrences / distinct prompts."""
    examples = auditorybench.ingest(data_dir).examples
    spans = [s for row in examples["spans"].to_pylist() for s in row]
    distinct = sorted({normalize_span(s) for s in spans if normalize_span(s)})
    print(f"AuditoryBench: {len(spans)} span occurrences, {len(distinct)} distinct prompts, "
          f"dedup ratio {len(spans) / len(distinct):.3f}x")
    return distinct, len(spans) / len(distinct)


def full_size_models(tiny: dict, device: str, dtype: torch.dtype):
    """stable-audio-open-1.0 and clap-htsat-fused at full size, random weights, tiny tokenizers."""
    from diffusers import StableAudioPipeline
    from transformers import ClapProcessor

    from ith_core.profiles import build_paper_architecture, load_clap, load_generator

    small = load_generator(tiny["generator"])
    parts = build_paper_architecture("generator")
    pipe = StableAudioPipeline(vae=parts["vae"], text_encoder=parts["text_encoder"],
                               projection_model=parts["projection_model"], tokenizer=small.tokenizer,
                               transformer=parts["transformer"], scheduler=small.scheduler).to(device, dtype)
    clap = build_paper_architecture("clap")
    _, small_processor = load_clap(tiny["clap"])
    processor = ClapProcessor(feature_extractor=clap["feature_extractor"], tokenizer=small_processor.tokenizer)
    return pipe, clap["model"], processor


def reference_loop(pipe, scorer: ClapScorer, spans, cfg, tmp: Path, steps: int | None = None) -> float:
    """One pipeline call per span: the whole latent window (no `latents=`, so the pipeline draws
    `transformer.config.sample_size` frames) cropped by the pipeline to the duration; the
    candidates written as WAV files and read back for scoring."""
    started = time.perf_counter()
    for span in spans:
        prompt = cfg.prompt_template.format(span=span)
        generator = torch.Generator("cpu").manual_seed(cfg.seed)
        audio = pipe(prompt, negative_prompt=cfg.negative_prompt,
                     num_inference_steps=steps or cfg.num_inference_steps, audio_end_in_s=cfg.duration_s,
                     num_waveforms_per_prompt=cfg.num_candidates, guidance_scale=cfg.guidance_scale,
                     generator=generator).audios.float().cpu().numpy()
        rate = pipe.vae.config.sampling_rate
        assert audio.shape[0] == cfg.num_candidates and audio.shape[-1] == int(cfg.duration_s * rate), audio.shape
        stem = hashlib.sha1(prompt.encode()).hexdigest()
        files = []
        for k, wave in enumerate(audio):
            path = tmp / f"{stem}-{k}.wav"
            path.write_bytes(wav_bytes(pcm16(wave), rate))
            files.append(path)
        waves = np.stack([read_wav(p.read_bytes())[0] for p in files])[None]
        scorer.score(waves, rate, [span])
    return time.perf_counter() - started


def stage_run(cfg: RunConfig, model_paths: dict, prompts, device: str) -> tuple[float, float]:
    """Wall time of plan + shards + collection (checksum verification included), and the generator's share."""
    from ith_core.stages import SAMPLE_SCHEMA, SPANS_SCHEMA

    layout = RunLayout(cfg.run_root, cfg.effective_run_id)
    spans = [{"example_id": f"bench/{i:05d}", "task": "pitch", "split": "dev", "span_index": 0, "span_text": p,
              "char_start": 0, "char_end": len(p), "score": 1.0} for i, p in enumerate(prompts)]
    sample = [{"example_id": s["example_id"], "task": "pitch", "split": "dev", "n_spans": 1} for s in spans]
    layout.write_table(pa.Table.from_pylist(spans, schema=SPANS_SCHEMA), "spans", "pitch-dev.parquet")
    layout.write_table(pa.Table.from_pylist(sample, schema=SAMPLE_SCHEMA), "spans", "pitch-dev.examples.parquet")
    layout.mark_done("spans", "bench", {})
    started = time.perf_counter()
    plan = imagine_stage.plan_stage(cfg, model_paths)
    reports = [imagine_stage.run_shard(cfg, model_paths, name, device) for name in plan["shards"]]
    imagine_stage.collect_stage(cfg)
    wall = time.perf_counter() - started
    model = sum(r["seconds_generate"] for r in reports)
    for r in reports:
        print(f"  shard {r['shard']}: {r['prompts']} prompts, {r['seconds']:.2f} s (generate "
              f"{r['seconds_generate']:.2f}, score {r['seconds_score']:.2f}, write {r['seconds_write']:.2f})")
    return wall, model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full-size", action="store_true")
    parser.add_argument("--prompts", type=int, default=8, help="distinct prompts timed on both paths")
    parser.add_argument("--steps", type=int, default=None, help="inference steps (default: 10 tiny, 50 full size)")
    parser.add_argument("--candidates", type=int, default=5)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--latent-length", choices=("full", "exact"), default="exact")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    distinct, dedup = benchmark_spans(auditorybench.locate(args.data_dir))
    rng = np.random.default_rng(0)
    prompts = [distinct[i] for i in sorted(rng.choice(len(distinct), args.prompts, replace=False))]

    corpus_rows = auditorybench.ingest(auditorybench.locate(args.data_dir), splits=("train",)).examples
    corpus = corpus_rows["sentence"].to_pylist() + [s for row in corpus_rows["spans"].to_pylist() for s in row]
    tiny = {role: str(p) for role, p in profiles.ensure_tiny_profile(corpus).items()}
    steps = args.steps or (50 if args.full_size else 10)
    with tempfile.TemporaryDirectory() as tmp:
        imagine = {"num_inference_steps": steps, "duration_s": args.duration, "num_candidates": args.candidates,
                   "batch_size": args.batch_size, "shard_size": max(args.prompts, args.batch_size),
                   "latent_length": args.latent_length, "dtype": "auto"}
        cfg = RunConfig.for_profile("tiny", run_root=tmp, run_id="bench", device=device,
                                    data={"tasks": ["pitch"], "splits": ["dev"]}, imagine=imagine)
        dtype = torch.float16 if device == "cuda" else torch.float32
        if args.full_size:
            pipe, clap_model, processor = full_size_models(tiny, device, dtype)
            scorer = ClapScorer(clap_model, processor, device)
        else:
            pipe = profiles.load_generator(tiny["generator"], torch_dtype=dtype).to(device)
            scorer = ClapScorer.from_folder(tiny["clap"], device)
        pipe.set_progress_bar_config(disable=True)
        # Both paths use these very objects: the stage's per-process cache is filled with them.
        plan_settings = imagine_stage.GenerationSettings.from_config(
            cfg.imagine, imagine_stage.generator_identity(tiny["generator"]), device)
        imagine_stage._MODELS[("generator", tiny["generator"], plan_settings.dtype, device)] = pipe
        imagine_stage._MODELS[("clap", tiny["clap"], device, cfg.imagine.clap_batch_size)] = scorer

        full = int(pipe.transformer.config.sample_size)
        rate, hop = int(pipe.vae.config.sampling_rate), int(pipe.vae.hop_length)
        exact = min(full, -(-int(args.duration * rate) // hop))
        print(f"device {device}, {'full-size random' if args.full_size else 'tiny'} models, {args.prompts} prompts "
              f"x {args.candidates} candidates, {steps} steps, guidance {cfg.imagine.guidance_scale}, "
              f"{args.duration} s clips, batch {args.batch_size}")
        print(f"latent frames: reference {full} ({full * hop / rate:.2f} s window), stage "
              f"{full if args.latent_length == 'full' else exact} ({args.latent_length})")
        # Warm-up, untimed: one step over the whole window runs every kernel once.
        reference_loop(pipe, scorer, prompts[:1], cfg.imagine, Path(tmp), steps=1)
        ref = reference_loop(pipe, scorer, prompts, cfg.imagine, Path(tmp))
        wall, model = stage_run(cfg, tiny, prompts, device)

    per_prompt = ref / wall
    print(f"reference-style loop: {ref:.2f} s ({ref / args.prompts:.3f} s/prompt)")
    print(f"imagine stage:        {wall:.2f} s ({wall / args.prompts:.3f} s/prompt); model time {model:.2f} s "
          f"= {model / wall:.1%} of the stage (orchestration + I/O + scoring {1 - model / wall:.1%})")
    print(f"per-prompt speed-up {per_prompt:.2f}x x dedup {dedup:.3f}x = whole-benchmark speed-up "
          f"{per_prompt * dedup:.2f}x")


if __name__ == "__main__":
    main()
