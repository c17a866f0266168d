"""Memory sizing of the imagine stage on this device: per-clip peaks, the batch sizes it picks, one call at them.

    .venv/bin/python benchmarks/gpu_memory_check.py            # paper-size generator (random weights), fp16 on CUDA
    .venv/bin/python benchmarks/gpu_memory_check.py --tiny     # the tiny profile (CPU smoke run)

On CUDA the stage measures the device bytes one more clip adds when denoising and when decoding
(`StableAudioGenerator.memory_per_clip`) and sizes its batches to 60 % of the free memory
(`ith_core.imagination.devices.batch_sizes`); this script records those numbers and then runs one generation
call of that many clips over the full 1024-frame window (2 steps, prefix decoding in slices) and
its peak memory, which must stay under the device's total.
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
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    from bench_imagine import full_size_models

    from ith_core.config import RunConfig
    from ith_core.imagination.devices import batch_sizes
    from ith_core.imagination.generators import GenerationSettings, StableAudioGenerator, candidate_seeds
    from ith_core.models import profiles

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.float16 if device == "cuda" else torch.float32
    tiny = {r: str(p) for r, p in profiles.ensure_tiny_profile(["dog barking sound", "a low hum"] * 200).items()}
    pipe = (
        profiles.load_generator(tiny["generator"], torch_dtype=dtype).to(device)
        if args.tiny
        else full_size_models(tiny, device, dtype)[0]
    )
    cfg = RunConfig.for_profile("paper", device=device, imagine={"num_inference_steps": 2, "latent_length": "full"})
    settings = GenerationSettings.from_config(cfg.imagine, "memory-check", device)
    generator = StableAudioGenerator(pipe, settings, device)
    out = {
        "device": device,
        "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
        "dtype": settings.dtype,
        "latent_frames": generator.latent_frames,
        "decode_frames": generator.decode_frames,
    }
    if device == "cuda":
        free, total = torch.cuda.mem_get_info()
        out.update(free_bytes_before=free, total_bytes=total)
        started = time.perf_counter()
        out["per_clip_bytes"] = dict(zip(("generate", "decode"), generator.memory_per_clip()))
        out["seconds_measure"] = round(time.perf_counter() - started, 2)
    batch, decode = batch_sizes(cfg, generator)
    generator.decode_batch_size = decode
    out.update(batch_size=batch, decode_batch_size=decode)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    prompts = [f"sound {i}" for i in range(batch)]
    audio = generator.generate(prompts, [candidate_seeds(42, p, 1) for p in prompts])
    if device == "cuda":
        torch.cuda.synchronize()
        out["peak_bytes"] = torch.cuda.max_memory_allocated()
        out["peak_fraction_of_total"] = round(out["peak_bytes"] / out["total_bytes"], 3)
    out.update(
        seconds_call=round(time.perf_counter() - started, 2),
        clips=int(audio.shape[0] * audio.shape[1]),
        finite=bool(torch.isfinite(audio).all()),
    )
    print(json.dumps(out, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
