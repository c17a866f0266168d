"""Paper-size component timings on this machine, and the seconds-per-prompt projection they give.

    .venv/bin/python benchmarks/bench_paper_size.py --threads 1          # measure (slow on CPU: ~10 min)
    .venv/bin/python benchmarks/bench_paper_size.py --project FILE.json  # projection from a measurement

Full-size stable-audio-open-1.0 (DiT, Oobleck VAE, T5-base), clap-htsat-fused and AST
architectures with random weights (nothing is downloaded); tokenizers are the tiny profile's.
Timed, one clip at a time (CPU time grows linearly with the batch, so per-clip seconds are what
batching cannot change on a CPU): T5 prompt encoding (with the negative prompt), one DiT step
(classifier-free guidance: batch 2) over the full 1024-frame window and over the exact 108
frames, one VAE decode of the full window and of the prefix that 5 s need (plus the decoder's
reach), WAV and FLAC encoding, one CLAP batch (5 clips) and one AST clip. Peak resident memory
above the baseline is sampled during each call (psutil, every 20 ms, with glibc's mmap threshold
fixed so freed tensors leave the process; run with MALLOC_MMAP_THRESHOLD_=131072). The full and
prefix decodes are also compared: the largest difference of the kept 5 s.

The projection (`project`) turns per-clip seconds into seconds per span occurrence of the whole
benchmark for the reference loop and the stage's modes, at given acceptance rates; see its
docstring. Results go to benchmarks/results/paper_size_cpu.json (measurement + projection).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import platform
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results"
STEPS = 50
CANDIDATES = 5
DURATION_S = 5.0


class PeakRss:
    """Peak resident set size above the level at entry, sampled every 20 ms in a thread."""

    def __enter__(self):
        import psutil

        _trim()
        self._proc = psutil.Process()
        self.base = self._proc.memory_info().rss
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(0.02)

    def __exit__(self, *exc):
        self.peak = max(self.peak, self._proc.memory_info().rss)
        self._stop.set()
        self._thread.join()

    @property
    def bytes(self) -> int:
        return int(self.peak - self.base)


def _trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def timed(fn, repeats: int) -> dict:
    seconds, peaks, out = [], [], None
    for _ in range(repeats):
        with PeakRss() as rss:
            started = time.perf_counter()
            out = fn()
            seconds.append(time.perf_counter() - started)
        peaks.append(rss.bytes)
        print(f"    {seconds[-1]:.2f} s, peak +{rss.bytes / 2**20:.0f} MiB", flush=True)
    return {
        "seconds": [round(s, 3) for s in seconds],
        "median_s": round(sorted(seconds)[len(seconds) // 2], 3),
        "peak_rss_bytes": max(peaks),
        "result": out,
    }


def measure(threads: int, repeats: int) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    from ith_core.audio import resample, to_mono
    from ith_core.data import auditorybench
    from ith_core.imagination.clap_scoring import ClapScorer
    from ith_core.imagination.generators import decoder_reach_frames
    from ith_core.models import paper_architectures, profiles
    from storage.audio_store import encode_audio, pcm16

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_imagine import full_size_models

    examples = auditorybench.ingest(auditorybench.locate(None), splits=("train",)).examples
    corpus = examples["sentence"].to_pylist() + [s for row in examples["spans"].to_pylist() for s in row]
    tiny = {role: str(p) for role, p in profiles.ensure_tiny_profile(corpus).items()}
    print("building full-size models (random weights)", flush=True)
    pipe, clap_model, processor = full_size_models(tiny, "cpu", torch.float32)
    pipe.set_progress_bar_config(disable=True)
    rate, hop = int(pipe.vae.config.sampling_rate), int(pipe.vae.hop_length)
    full = int(pipe.transformer.config.sample_size)
    samples = int(DURATION_S * rate)
    exact = math.ceil(samples / hop)
    prefix = min(full, exact + decoder_reach_frames(pipe.vae.config.downsampling_ratios))
    out: dict = {"frames": {"full": full, "exact": exact, "decode_prefix": prefix}, "components": {}}
    comp = out["components"]

    # The DiT's inputs exactly as the pipeline builds them: captured from a one-step pipeline call.
    captured = {}

    def capture(module, args, kwargs):
        captured["args"], captured["kwargs"] = args, kwargs

    def dit_inputs(frames: int):
        handle = pipe.transformer.register_forward_pre_hook(capture, with_kwargs=True)
        try:
            latents = torch.randn(1, pipe.transformer.config.in_channels, frames)
            pipe(
                "dog barking sound",
                negative_prompt="Low quality",
                num_inference_steps=1,
                audio_end_in_s=DURATION_S,
                guidance_scale=7.0,
                latents=latents,
                output_type="latent",
            )
        finally:
            handle.remove()
        return captured["args"], captured["kwargs"]

    with torch.inference_mode():
        print("T5 prompt encoding (prompt + negative prompt)", flush=True)
        comp["text_encode"] = timed(
            lambda: pipe.encode_prompt(["dog barking sound"], "cpu", True, ["Low quality"]) is not None, repeats
        )
        for name, frames in (("dit_step_exact", exact), ("dit_step_full", full)):
            args, kwargs = dit_inputs(frames)
            print(f"DiT step, {frames} frames, CFG batch {args[0].shape[0]}", flush=True)
            comp[name] = timed(lambda: pipe.transformer(*args, **kwargs) is not None, repeats)
        latents = torch.randn(1, pipe.vae.config.decoder_input_channels, full)
        print(f"VAE decode, prefix {prefix} frames", flush=True)
        comp["vae_decode_prefix"] = timed(lambda: pipe.vae.decode(latents[:, :, :prefix]).sample[:, :, :samples], 1)
        print(f"VAE decode, full {full} frames", flush=True)
        comp["vae_decode_full"] = timed(lambda: pipe.vae.decode(latents).sample[:, :, :samples], 1)
        a, b = comp["vae_decode_full"].pop("result"), comp["vae_decode_prefix"].pop("result")
        out["prefix_decode_check"] = {
            "max_abs_diff": float((a - b).abs().max()),
            "max_abs_full": float(a.abs().max()),
            "rms_full": float(a.pow(2).mean().sqrt()),
        }
        print(f"  prefix vs full decode: {out['prefix_decode_check']}", flush=True)
        wave = (a / a.abs().max().clamp(min=1e-6) * 0.5).numpy()[0]  # a playable-range clip
        for fmt in ("wav", "flac"):
            print(f"encode {fmt}", flush=True)
            comp[f"encode_{fmt}"] = timed(lambda: len(encode_audio(pcm16(wave), rate, fmt)), 3)
            comp[f"encode_{fmt}"]["bytes"] = comp[f"encode_{fmt}"].pop("result")
        scorer = ClapScorer(clap_model, processor, "cpu", batch_size=CANDIDATES)
        waves = np.repeat(wave[None, None], CANDIDATES, axis=1)
        print(f"CLAP batch of {CANDIDATES} clips", flush=True)
        comp["clap_batch5"] = timed(lambda: scorer.score(waves, rate, ["dog barking"]) is not None, repeats)
        ast = paper_architectures.build_paper_architecture("audio_encoder")
        mono = resample(to_mono(wave[None])[0][None], rate, 16000)[0]
        print("AST, one clip", flush=True)

        def encode_ast():
            features = ast["feature_extractor"]([mono], sampling_rate=16000, return_tensors="pt")
            return ast["model"](**features).last_hidden_state.shape

        comp["ast_clip"] = timed(encode_ast, repeats)
        comp["ast_clip"]["tokens"] = list(comp["ast_clip"].pop("result"))
    for value in comp.values():
        value.pop("result", None)
    return out


def expected_candidates(p: float, k: int = CANDIDATES) -> float:
    """Candidates generated per prompt by lazy sampling when each passes with probability p, independently."""
    return float(k) if p <= 0 else sum((1 - p) ** c for c in range(k))


def benchmark_dedup() -> dict:
    """Span occurrences, distinct prompts and distinct prompts per (task, split) of AuditoryBench."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_imagine import benchmark_spans

    from ith_core.data import auditorybench

    return benchmark_spans(auditorybench.locate(None))[1]


def project(measured: dict, dedup: dict, rates=(0.3, 0.5, 0.8), steps: int = STEPS) -> dict:
    """Seconds per span occurrence of the whole benchmark, reference loop vs the stage's modes.

    Per generated clip: `steps` DiT steps (CFG batch 2) + one VAE decode, plus per prompt one T5
    encoding per generation call and CLAP on every clip; AST (stage 4, once per selected clip in
    both paths) is reported apart, not in the ratio.
    - reference: 5 clips per prompt, full window, full decode, WAV written; it skips a prompt
      whose WAV exists in its split, so it generates one prompt per distinct (task, split, span).
    - stage: one prompt per distinct span (global dedup); `full` or `exact` latents; prefix
      decode; FLAC written; `all` generates 5 clips, `lazy` E[n] = sum_{c<5} (1-p)^c clips at a
      per-candidate acceptance rate p (independent candidates; correlated failures raise E[n],
      up to 5 when a prompt never passes). Lazy encodes the prompt once per round it is open.
    Costs are per clip (CPU time is linear in the batch); on a GPU batching lowers per-clip cost
    for both paths, which `benchmarks/gpu_check.sh` measures. `lower_bound_speedup` assumes our
    clips cost as much as the reference's (no prefix-decode saving): (5 / E[n]) x the dedup gain.
    """
    c = {k: v["median_s"] for k, v in measured["components"].items()}
    clap_clip = c["clap_batch5"] / CANDIDATES
    occurrences = dedup["occurrences"]

    def per_prompt(dit: float, decode: float, write: float, n: float, encodes: float) -> dict:
        generate = n * (steps * dit + decode)
        return {
            "clips": round(n, 4),
            "generate_s": round(generate, 2),
            "text_s": round(encodes * c["text_encode"], 2),
            "write_s": round(n * write, 3),
            "clap_s": round(n * clap_clip, 2),
            "total_s": round(generate + encodes * c["text_encode"] + n * write + n * clap_clip, 2),
        }

    ref_prompts = dedup["distinct_per_task_split"]
    ref = per_prompt(c["dit_step_full"], c["vae_decode_full"], c["encode_wav"], CANDIDATES, 1)
    ref_total = ref["total_s"] * ref_prompts
    dedup_gain = ref_prompts / dedup["distinct_prompts"]
    out = {
        "steps": steps,
        "candidates": CANDIDATES,
        "occurrences": occurrences,
        "distinct_prompts": dedup["distinct_prompts"],
        "per_split_dedup": dedup["reference_per_split_dedup"],
        "global_dedup": dedup["global_dedup"],
        "dedup_gain": round(dedup_gain, 4),
        "reference": {
            **ref,
            "prompts": ref_prompts,
            "seconds_per_occurrence": round(ref_total / occurrences, 2),
            "whole_benchmark_hours_one_device": round(ref_total / 3600, 1),
        },
        "ast_clip_s": c["ast_clip"],
        "modes": [],
    }
    for latent in ("full", "exact"):
        dit = c["dit_step_full" if latent == "full" else "dit_step_exact"]
        for sampling, p in [("all", None)] + [("lazy", r) for r in rates]:
            n = CANDIDATES if sampling == "all" else expected_candidates(p)
            # A prompt is encoded once per round it takes part in: E[n] rounds on average.
            ours = per_prompt(dit, c["vae_decode_prefix"], c["encode_flac"], n, n if sampling == "lazy" else 1)
            total = ours["total_s"] * dedup["distinct_prompts"]
            out["modes"].append(
                {
                    "latent_length": latent,
                    "sampling": sampling,
                    "acceptance_rate": p,
                    **ours,
                    "seconds_per_occurrence": round(total / occurrences, 2),
                    "per_prompt_speedup": round(ref["total_s"] / ours["total_s"], 3),
                    "whole_benchmark_speedup": round(ref_total / total, 3),
                    "lower_bound_speedup": round(CANDIDATES / n * dedup_gain, 3) if latent == "full" else None,
                    "whole_benchmark_hours_one_device": round(total / 3600, 1),
                }
            )
    return out


def paper_environment(threads: int) -> dict:
    """`benchmarks.environment` plus the fields paper_size_cpu.json has always recorded beside it."""
    import torch

    from benchmarks.environment import environment

    return {
        **environment("cpu", threads),
        "processor": platform.processor() or platform.machine(),
        "dtype": "float32",
        "cuda": torch.cuda.is_available(),
        "note": "full-size architectures with random weights; per-clip timings on a shared 2-core machine",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--repeats", type=int, default=2, help="timed calls per cheap component")
    parser.add_argument("--project", default=None, help="recompute the projection of an existing results file")
    parser.add_argument("--rates", default="0.3,0.5,0.8", help="per-candidate acceptance rates of the projection")
    parser.add_argument("--out", default=str(RESULTS / "paper_size_cpu.json"))
    args = parser.parse_args()
    rates = tuple(float(r) for r in args.rates.split(","))
    if args.project:
        result = json.loads(Path(args.project).read_text())
        result.pop("projection", None)
    else:
        started = time.perf_counter()
        result = {
            "benchmark": "paper_size_components",
            "environment": paper_environment(args.threads),
            "settings": {
                "steps": STEPS,
                "candidates": CANDIDATES,
                "duration_s": DURATION_S,
                "guidance_scale": 7.0,
                "repeats": args.repeats,
            },
            "measured": measure(args.threads, args.repeats),
        }
        result["wall_s"] = round(time.perf_counter() - started, 1)
    result["dedup"] = benchmark_dedup()
    result["projection"] = project(result["measured"], result["dedup"], rates)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["projection"], indent=2))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
