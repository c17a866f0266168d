"""A short AudioLDM2 generation on CUDA through the stage's generator, timed (benchmarks/gpu_check.sh step 5).

    .venv/bin/python benchmarks/bench_audioldm2_cuda.py --out audioldm2_generate_cuda.json   # paper size, fp16
    .venv/bin/python benchmarks/bench_audioldm2_cuda.py --tiny --steps 2                     # CPU smoke run

cvssp/audioldm2 at full size with random weights (`bench_audioldm2_size.build`), fp16 on CUDA:
`--prompts` prompts x `--candidates` candidates of 5 s at `--steps` steps, for `exact` and `full`
latents, generated as the stage generates them (candidate by candidate over all prompts, in calls
of the batch size the stage picks from the GPU's free memory and `AudioLDM2Generator.memory_per_clip`).
Records per mode the batch sizes, seconds, clips per second, the generator's own split (denoise,
decode), peak CUDA memory and how many clips came out NaN, infinite or silent (random fp16 weights
may overflow; the stage would refuse those clips, this check only counts them).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="the tiny AudioLDM2 instead of the paper size")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--candidates", type=int, default=5)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    from bench_audioldm2_size import build

    from benchmarks.environment import environment
    from ith_core.config import ImagineConfig
    from ith_core.imagination.devices import CPU_BATCH_SIZE, size_batches
    from ith_core.imagination.generators import AudioLDM2Generator, GenerationSettings, audio_fault, candidate_seeds
    from ith_core.models import profiles

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = "float16" if device == "cuda" else "float32"
    if args.tiny:
        folder = profiles.ensure_tiny_audioldm2(["dog barking sound", "a low hum", "rain on a roof"] * 50)
        pipe = profiles.load_audioldm2(folder, torch_dtype=getattr(torch, dtype)).to(device)
    else:
        pipe = build(os.cpu_count() or 1)[0].to(device, getattr(torch, dtype))
    prompts = [f"sound of thing {i}" for i in range(args.prompts)]
    out: dict = {
        "benchmark": "audioldm2_generate",
        "environment": environment(device, torch.get_num_threads()),
        "settings": {
            "tiny": args.tiny,
            "prompts": args.prompts,
            "candidates": args.candidates,
            "steps": args.steps,
            "duration_s": 5.0,
            "dtype": dtype,
        },
        "modes": [],
    }
    for latent in ("exact", "full"):
        cfg = ImagineConfig(
            num_inference_steps=args.steps,
            num_candidates=args.candidates,
            duration_s=5.0,
            latent_length=latent,
            dtype=dtype,
        )
        gen = AudioLDM2Generator(pipe, GenerationSettings.from_config(cfg, "audioldm2-check", device), device)
        mode: dict = {"latent_length": latent, "latent_frames": gen.latent_frames}
        if device == "cuda":
            per_clip = gen.memory_per_clip()
            free, total = torch.cuda.mem_get_info()
            batch, decode = size_batches(free, *per_clip)
            mode.update(per_clip_bytes=list(per_clip), free_bytes=free, total_bytes=total)
            torch.cuda.reset_peak_memory_stats()
        else:
            batch, decode = CPU_BATCH_SIZE, None
        gen.decode_batch_size = decode
        mode.update(batch_size=batch, decode_batch_size=decode)
        seeds = {p: candidate_seeds(42, p, args.candidates) for p in prompts}
        faults = 0
        started = time.perf_counter()
        for c in range(args.candidates):  # as lazy sampling's rounds: candidate c of every prompt
            for start in range(0, len(prompts), batch):
                chunk = prompts[start : start + batch]
                audio = gen.generate(chunk, [[seeds[p][c]] for p in chunk]).cpu().numpy()
                faults += sum(audio_fault(clip) is not None for clip in audio.reshape(-1, *audio.shape[-2:]))
        seconds = time.perf_counter() - started
        clips = len(prompts) * args.candidates
        mode.update(
            seconds=round(seconds, 3),
            clips=clips,
            clips_per_s=round(clips / seconds, 3),
            seconds_per_clip=round(seconds / clips, 4),
            unusable_clips=faults,
            **{k: round(v, 3) if isinstance(v, float) else v for k, v in gen.timings.items()},
        )
        if device == "cuda":
            mode["peak_memory_bytes"] = torch.cuda.max_memory_allocated()
        out["modes"].append(mode)
        print(json.dumps(mode), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
        print(f"written {args.out}")


if __name__ == "__main__":
    main()
