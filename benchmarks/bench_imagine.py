"""Stages 2-3 speed: a reference-style loop against the imagine stage's modes, on one model and prompt set.

    .venv/bin/python benchmarks/bench_imagine.py --prompts 4    # tiny, CPU: results/imagine_tiny_cpu.json
    .venv/bin/python benchmarks/bench_imagine.py --full-size --prompts 8   # stable-audio-open-1.0 and CLAP shapes,
                                                                           # random weights (a GPU; gpu_check.sh)

Reference-style loop (as the official release does it): one prompt per pipeline call, its 5
candidates, the model's whole latent window decoded whole and cropped to the duration, every
candidate written to a WAV file and read back for CLAP scoring. Its dedup is its own: it skips
a prompt whose WAV exists in the same split (occurrences / distinct prompts per task and split).

The stage, through its drivers (plan, shards, collection with checksum verification), in four
modes: latent_length `full` (the default, the method's window) and `exact`, each with lazy
rejection sampling (the default) and with all candidates; prefix decoding, batching across
prompts and global dedup in all of them. Per mode: seconds per prompt, the per-prompt ratio
against the reference, candidates generated per prompt, per-component seconds, and the
whole-benchmark ratio = per-prompt ratio x (global dedup / the reference's per-split dedup).

On the tiny profile the VAE dominates and CLAP has random weights, so the lazy saving here says
nothing about real acceptance rates: `bench_paper_size.py` projects paper-size costs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
RESULTS = Path(__file__).resolve().parent / "results"

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import torch  # noqa: E402

from benchmarks.environment import environment  # noqa: E402
from ith_core.config import RunConfig  # noqa: E402
from ith_core.data import auditorybench  # noqa: E402
from ith_core.imagination import devices as imagine_devices
from ith_core.imagination.clap_scoring import ClapScorer  # noqa: E402
from ith_core.imagination.generators import normalize_span  # noqa: E402
from ith_core.models import profiles
from ith_core.stages import imagine as imagine_stage
from storage.audio_store import pcm16, pcm16_to_float, wav_bytes  # noqa: E402
from storage.layout import RunLayout  # noqa: E402
from storage.wav import decode_pcm16  # noqa: E402


def benchmark_spans(data_dir: str) -> tuple[list[str], dict]:
    """Distinct prompts of AuditoryBench's gold spans, and its dedup ratios (no generation)."""
    examples = auditorybench.ingest(data_dir).examples.to_pylist()
    occurrences = [
        (r["task"], r["split"], normalize_span(s)) for r in examples for s in r["spans"] if normalize_span(s)
    ]
    distinct = sorted({o[2] for o in occurrences})
    per_split = len(set(occurrences))
    dedup = {
        "occurrences": len(occurrences),
        "distinct_prompts": len(distinct),
        "distinct_per_task_split": per_split,
        "global_dedup": round(len(occurrences) / len(distinct), 4),
        "reference_per_split_dedup": round(len(occurrences) / per_split, 4),
    }
    print(
        f"AuditoryBench: {dedup['occurrences']} span occurrences, {dedup['distinct_prompts']} distinct prompts "
        f"(dedup {dedup['global_dedup']}x); the reference's per-split skip: {dedup['reference_per_split_dedup']}x"
    )
    return distinct, dedup


def full_size_models(tiny: dict, device: str, dtype: torch.dtype):
    """stable-audio-open-1.0 and clap-htsat-fused at full size, random weights, tiny tokenizers."""
    from diffusers import StableAudioPipeline
    from transformers import ClapProcessor

    from ith_core.models.paper_architectures import build_paper_architecture
    from ith_core.models.profiles import load_clap, load_generator

    small = load_generator(tiny["generator"])
    # Built on the target device: random initialisation of 1.2 B parameters is slow on a CPU.
    with torch.device(device):
        parts = build_paper_architecture("generator")
        clap = build_paper_architecture("clap")
    pipe = StableAudioPipeline(
        vae=parts["vae"],
        text_encoder=parts["text_encoder"],
        projection_model=parts["projection_model"],
        tokenizer=small.tokenizer,
        transformer=parts["transformer"],
        scheduler=small.scheduler,
    ).to(device, dtype)
    _, small_processor = load_clap(tiny["clap"])
    processor = ClapProcessor(feature_extractor=clap["feature_extractor"], tokenizer=small_processor.tokenizer)
    return pipe, clap["model"].to(device, dtype), processor


def reference_loop(pipe, scorer: ClapScorer, spans, cfg, tmp: Path, steps: int | None = None) -> dict:
    """One pipeline call per span: the whole latent window (no `latents=`, so the pipeline draws
    `transformer.config.sample_size` frames) decoded whole and cropped by the pipeline to the
    duration; the candidates written as WAV files and read back for scoring."""
    seconds = {"generate": 0.0, "write": 0.0, "score": 0.0}
    scores = []
    started = time.perf_counter()
    for span in spans:
        prompt = cfg.prompt_template.format(span=span)
        generator = torch.Generator("cpu").manual_seed(cfg.seed)
        t0 = time.perf_counter()
        audio = (
            pipe(
                prompt,
                negative_prompt=cfg.negative_prompt,
                num_inference_steps=steps or cfg.num_inference_steps,
                audio_end_in_s=cfg.duration_s,
                num_waveforms_per_prompt=cfg.num_candidates,
                guidance_scale=cfg.guidance_scale,
                generator=generator,
            )
            .audios.float()
            .cpu()
            .numpy()
        )
        t1 = time.perf_counter()
        rate = pipe.vae.config.sampling_rate
        assert audio.shape[0] == cfg.num_candidates and audio.shape[-1] == int(cfg.duration_s * rate), audio.shape
        stem = hashlib.sha1(prompt.encode()).hexdigest()
        files = []
        for k, wave in enumerate(audio):
            path = tmp / f"{stem}-{k}.wav"
            path.write_bytes(wav_bytes(pcm16(wave), rate))
            files.append(path)
        waves = np.stack([pcm16_to_float(decode_pcm16(p.read_bytes())[0]) for p in files])[None]
        t2 = time.perf_counter()
        scores.extend(float(x) for x in scorer.score(waves, rate, [span])[0])
        seconds["generate"] += t1 - t0
        seconds["write"] += t2 - t1
        seconds["score"] += time.perf_counter() - t2
    return {
        "seconds": round(time.perf_counter() - started, 3),
        "candidates_per_prompt": cfg.num_candidates,
        **{f"seconds_{k}": round(v, 3) for k, v in seconds.items()},
        "clap_scores": [round(x, 5) for x in scores],
    }


def stage_run(cfg: RunConfig, model_paths: dict, prompts, device: str) -> dict:
    """Wall time of plan + shards + collection (checksum verification included), with per-component seconds."""
    from storage import run_files

    layout = RunLayout(cfg.run_root, cfg.effective_run_id)
    spans = [
        {
            "example_id": f"bench/{i:05d}",
            "task": "pitch",
            "split": "dev",
            "span_index": 0,
            "span_text": p,
            "char_start": 0,
            "char_end": len(p),
            "score": 1.0,
        }
        for i, p in enumerate(prompts)
    ]
    sample = [{"example_id": s["example_id"], "task": "pitch", "split": "dev", "n_spans": 1} for s in spans]
    layout.write_table(
        pa.Table.from_pylist(spans, schema=run_files.SPANS_SCHEMA), *run_files.spans_table("pitch", "dev")
    )
    layout.write_table(
        pa.Table.from_pylist(sample, schema=run_files.SAMPLE_SCHEMA), *run_files.sampled_examples("pitch", "dev")
    )
    layout.mark_done("spans", "bench", {})
    started = time.perf_counter()
    plan = imagine_stage.plan_imagine(cfg, model_paths)
    t_plan = time.perf_counter()
    reports = [imagine_stage.generate_candidates(cfg, model_paths, name, device) for name in plan["shards"]]
    t_shards = time.perf_counter()
    collected = imagine_stage.select_candidates(cfg)
    wall = time.perf_counter() - started
    out = {
        "seconds": round(wall, 3),
        "seconds_plan": round(t_plan - started, 3),
        "seconds_collect": round(time.perf_counter() - t_shards, 3),
        "candidates_per_prompt": collected["candidates_per_prompt"],
        "accepted": collected["accepted"],
        "batch_size": reports[0]["batch_size"] if reports else None,
    }
    for key in ("generate", "score", "write", "load"):
        out[f"seconds_{key}"] = round(sum(r[f"seconds_{key}"] for r in reports), 3)
    return out


MODES = (("full", "lazy"), ("full", "all"), ("exact", "lazy"), ("exact", "all"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full-size", action="store_true")
    parser.add_argument("--prompts", type=int, default=4, help="distinct prompts timed on every path")
    parser.add_argument("--steps", type=int, default=None, help="inference steps (default: 10 tiny, 50 full size)")
    parser.add_argument("--candidates", type=int, default=5)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--batch-size", type=int, default=None, help="clips per generation call (default: auto)")
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="CLAP threshold of the stage runs (default: the median score of the reference's "
        "candidates, so that about half pass; random weights give no real rate)",
    )
    parser.add_argument(
        "--modes",
        default=",".join(f"{a}-{b}" for a, b in MODES),
        help="stage modes to time, latent-sampling pairs (default: all four)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads on a CPU (default: torch's)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument(
        "--out", default=None, help="results JSON (default: benchmarks/results/imagine_<profile>_<device>.json)"
    )
    args = parser.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        data_dir = auditorybench.locate(args.data_dir)
        distinct, dedup = benchmark_spans(data_dir)
        corpus_rows = auditorybench.ingest(data_dir, splits=("train",)).examples
        corpus = corpus_rows["sentence"].to_pylist() + [s for row in corpus_rows["spans"].to_pylist() for s in row]
    except auditorybench.DataError as error:
        # A GPU machine without the benchmark copy or a network: the recorded CPU run's prompts and dedup.
        recorded = json.loads((RESULTS / "imagine_tiny_cpu.json").read_text())
        print(
            f"AuditoryBench not available ({str(error)[:200]}); using the prompts and dedup of "
            "results/imagine_tiny_cpu.json"
        )
        distinct, dedup, corpus = recorded["prompts"], {**recorded["dedup"], "source": "imagine_tiny_cpu.json"}, None
    rng = np.random.default_rng(0)
    prompts = [distinct[i] for i in sorted(rng.choice(len(distinct), min(args.prompts, len(distinct)), replace=False))]
    if corpus is None:
        corpus = [f"{p} sound" for p in distinct] * 50  # tokenizers of the tiny profile: any text works
    tiny = {role: str(p) for role, p in profiles.ensure_tiny_profile(corpus).items()}
    steps = args.steps or (50 if args.full_size else 10)
    dtype = torch.float16 if device == "cuda" else torch.float32
    if args.full_size:
        pipe, clap_model, processor = full_size_models(tiny, device, dtype)
        scorer = ClapScorer(clap_model, processor, device)
    else:
        pipe = profiles.load_generator(tiny["generator"], torch_dtype=dtype).to(device)
        scorer = ClapScorer.from_folder(tiny["clap"], device)
    pipe.set_progress_bar_config(disable=True)
    full = int(pipe.transformer.config.sample_size)
    rate, hop = int(pipe.vae.config.sampling_rate), int(pipe.vae.hop_length)
    exact = min(full, -(-int(args.duration * rate) // hop))
    settings = {
        "profile": "full-size random weights" if args.full_size else "tiny",
        "prompts": args.prompts,
        "candidates": args.candidates,
        "steps": steps,
        "duration_s": args.duration,
        "guidance_scale": 7.0,
        "batch_size": args.batch_size,
        "latent_frames": {"full": full, "exact": exact},
        "window_s": round(full * hop / rate, 2),
        "dtype": str(dtype).replace("torch.", ""),
    }
    print(f"device {device}: {settings}")
    results = {
        "benchmark": "imagine_stage_vs_reference",
        "environment": environment(device, torch.get_num_threads()),
        "settings": settings,
        "dedup": dedup,
        "prompts": prompts,
    }
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as tmp:
        base = RunConfig.for_profile("tiny", run_root=tmp, device=device).imagine
        # Warm-up, untimed: one step over the whole window runs every kernel once.
        reference_loop(pipe, scorer, prompts[:1], base, Path(tmp), steps=1)
        ref_cfg = base.model_copy(
            update={"num_inference_steps": steps, "duration_s": args.duration, "num_candidates": args.candidates}
        )
        results["reference"] = reference_loop(pipe, scorer, prompts, ref_cfg, Path(tmp))
        if device == "cuda":
            results["reference"]["peak_memory_bytes"] = torch.cuda.max_memory_allocated()
        threshold = (
            args.threshold if args.threshold is not None else float(np.median(results["reference"]["clap_scores"]))
        )
        settings["threshold"] = round(threshold, 6)
        print(f"reference-style loop: {results['reference']}; stage threshold {threshold:.4f}")
        results["modes"] = []
        for mode in args.modes.split(","):
            latent, sampling = mode.split("-")
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            root = Path(tmp) / mode
            imagine = {
                "num_inference_steps": steps,
                "duration_s": args.duration,
                "num_candidates": args.candidates,
                "batch_size": args.batch_size,
                "shard_size": max(args.prompts, 1),
                "latent_length": latent,
                "sampling": sampling,
                "dtype": "auto",
                "thresholds": {"animal": threshold, "pitch": threshold},
            }
            cfg = RunConfig.for_profile(
                "tiny",
                run_root=str(root),
                run_id="bench",
                device=device,
                data={"tasks": ["pitch"], "splits": ["dev"]},
                imagine=imagine,
            )
            # The stage uses these very objects: its per-process model cache is filled with them.
            plan_settings = imagine_stage.GenerationSettings.from_config(
                cfg.imagine, imagine_stage.generator_identity(tiny["generator"]), device
            )
            imagine_devices._MODELS[("generator", tiny["generator"], plan_settings.dtype, device)] = pipe
            imagine_devices._MODELS[("clap", tiny["clap"], device, cfg.imagine.clap_batch_size)] = scorer
            run = stage_run(cfg, tiny, prompts, device)
            ref = results["reference"]["seconds"]
            run.update(
                latent_length=latent,
                sampling=sampling,
                seconds_per_prompt=round(run["seconds"] / args.prompts, 3),
                clips_per_s=round(run["candidates_per_prompt"] * args.prompts / run["seconds"], 4),
                per_prompt_speedup=round(ref / run["seconds"], 3),
                whole_benchmark_speedup=round(
                    ref / run["seconds"] * dedup["global_dedup"] / dedup["reference_per_split_dedup"], 3
                ),
            )
            if device == "cuda":
                run["peak_memory_bytes"] = torch.cuda.max_memory_allocated()
            results["modes"].append(run)
            print(f"{mode}: {run}")
    ref = results["reference"]
    print(
        f"\nreference-style loop: {ref['seconds'] / args.prompts:.3f} s/prompt, {args.candidates} candidates/prompt, "
        f"per-split dedup {dedup['reference_per_split_dedup']}x"
    )
    print("| mode | s/prompt | candidates/prompt | per prompt vs reference | whole benchmark (dedup) |")
    print("|---|---|---|---|---|")
    for run in results["modes"]:
        print(
            f"| {run['latent_length']}, {run['sampling']} | {run['seconds_per_prompt']} | "
            f"{run['candidates_per_prompt']} "
            f"| {run['per_prompt_speedup']}x | {run['whole_benchmark_speedup']}x |"
        )
    out = Path(args.out or RESULTS / f"imagine_{'full_size' if args.full_size else 'tiny'}_{device}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written {out}")


if __name__ == "__main__":
    main()
