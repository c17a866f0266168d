"""The README's performance tables, printed from the committed files in benchmarks/results/.

    .venv/bin/python benchmarks/results_table.py            # markdown to stdout; paste into README.md

Reads imagine_tiny_cpu.json (bench_imagine.py), paper_size_cpu.json (bench_paper_size.py) and,
when present, the GPU check's imagine_full_size_cuda.json, imagine_memory_cuda.json and
fusion_step_cuda.json. H100-hours are derived from the paper-size CPU projection as described
in `h100_hours`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
# Published: Stable Audio Open generates 47 s of audio in 100 steps in 8.6 s on an A40.
A40_SECONDS_100_STEPS = 8.6
# Assumed, not measured: an H100 runs this fp16 DiT about 2.5x as fast as an A40.
H100_OVER_A40 = 2.5


def _load(name: str) -> dict | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.is_file() else None


def h100_hours(paper: dict) -> tuple[float, dict]:
    """Whole-benchmark H100-hours per mode: the CPU projection scaled to an H100.

    One factor maps CPU seconds to A40 seconds: the published A40 time of one 100-step
    full-window generation (8.6 s) over this CPU's time for the same work (100 DiT steps at 1024
    frames + one full decode); H100_OVER_A40 then maps A40 to H100. Both are stated assumptions:
    GPU batching, fp16 kernels and the VAE's share on a GPU differ from a CPU's, which
    gpu_check.sh measures.
    """
    c = {k: v["median_s"] for k, v in paper["measured"]["components"].items()}
    cpu_equivalent = 100 * c["dit_step_full"] + c["vae_decode_full"]
    factor = A40_SECONDS_100_STEPS / cpu_equivalent / H100_OVER_A40
    proj = paper["projection"]
    hours = {"reference": proj["reference"]["whole_benchmark_hours_one_device"] * factor}
    for m in proj["modes"]:
        key = f"{m['latent_length']}-{m['sampling']}" + (f"-p{m['acceptance_rate']}" if m["acceptance_rate"] else "")
        hours[key] = m["whole_benchmark_hours_one_device"] * factor
    return factor, hours


def main() -> int:
    tiny, paper = _load("imagine_tiny_cpu.json"), _load("paper_size_cpu.json")
    if tiny is None or paper is None:
        print("benchmarks/results/ lacks imagine_tiny_cpu.json or paper_size_cpu.json", file=sys.stderr)
        return 1
    s, env, d = tiny["settings"], tiny["environment"], tiny["dedup"]
    ref = tiny["reference"]
    print(f"**Tiny profile, CPU** (`imagine_tiny_cpu.json`: {s['prompts']} prompts x {s['candidates']} candidates, "
          f"{s['steps']} steps, {s['duration_s']} s clips, torch {env['versions']['torch']}, {env['torch_threads']} "
          f"thread(s); stage threshold {s['threshold']} = median reference score). Reference-style loop "
          f"{ref['seconds'] / s['prompts']:.2f} s/prompt; its per-split dedup {d['reference_per_split_dedup']}x, "
          f"ours (global) {d['global_dedup']}x.\n")
    print("| mode | s/prompt | candidates/prompt | per prompt vs reference | whole benchmark, with dedup |")
    print("|---|---|---|---|---|")
    for m in tiny["modes"]:
        default = " (default)" if (m["latent_length"], m["sampling"]) == ("full", "lazy") else ""
        print(f"| {m['latent_length']}, {m['sampling']}{default} | {m['seconds_per_prompt']:.2f} | "
              f"{m['candidates_per_prompt']:.2f} | {m['per_prompt_speedup']:.2f}x | "
              f"{m['whole_benchmark_speedup']:.2f}x |")
    c = paper["measured"]["components"]
    pe, pr = paper["environment"], paper["projection"]
    check = paper["measured"]["prefix_decode_check"]
    print(f"\n**Paper size, CPU, measured** (`paper_size_cpu.json`: random weights, float32, {pe['torch_threads']} "
          f"thread(s), shared machine): DiT step (CFG batch 2) {c['dit_step_full']['median_s']:.1f} s at 1024 frames, "
          f"{c['dit_step_exact']['median_s']:.1f} s at 108; VAE decode {c['vae_decode_full']['median_s']:.0f} s "
          "for 1024 "
          f"frames, {c['vae_decode_prefix']['median_s']:.1f} s for the 119-frame prefix (kept 5 s equal within "
          f"{check['max_abs_diff']:.1e}, signal max {check['max_abs_full']:.2f}); CLAP 5 clips "
          f"{c['clap_batch5']['median_s']:.1f} s; AST one clip {c['ast_clip']['median_s']:.1f} s; T5 "
          f"{c['text_encode']['median_s']:.1f} s; FLAC {c['encode_flac']['bytes'] / c['encode_wav']['bytes']:.2f}x "
          "the WAV size on this (noise-like) audio.\n")
    print(f"**Paper size, projected** at {pr['steps']} steps, {pr['candidates']} candidates: the reference "
          f"{pr['reference']['total_s']:.0f} s per prompt over {pr['reference']['prompts']} prompts (per-split skip); "
          f"the stage over {pr['distinct_prompts']} distinct prompts. p = per-candidate acceptance rate (assumed, "
          "independent candidates).\n")
    factor, hours = h100_hours(paper)
    print("| mode | p | candidates/prompt | s/prompt (CPU) | per prompt vs reference | whole benchmark | "
          "H100-hours, whole benchmark |")
    print("|---|---|---|---|---|---|---|")
    print(f"| reference loop | - | 5 | {pr['reference']['total_s']:.0f} | 1x | 1x | {hours['reference']:.1f} |")
    for m in pr["modes"]:
        key = f"{m['latent_length']}-{m['sampling']}" + (f"-p{m['acceptance_rate']}" if m["acceptance_rate"] else "")
        print(f"| {m['latent_length']}, {m['sampling']} | {m['acceptance_rate'] if m['acceptance_rate'] else '-'} | "
              f"{m['clips']:.2f} | {m['total_s']:.0f} | {m['per_prompt_speedup']:.2f}x | "
              f"{m['whole_benchmark_speedup']:.2f}x | {hours[key]:.1f} |")
    bounds = ", ".join(f"{m['lower_bound_speedup']:.2f}x at p = {m['acceptance_rate']}" for m in pr["modes"]
                       if m["latent_length"] == "full" and m["sampling"] == "lazy")
    print(f"\nThe `full`, lazy ratio without any prefix-decoding saving (our clips as costly as the reference's; only "
          f"fewer clips and the dedup gain of {pr['dedup_gain']}x): {bounds}. The full-window decode was timed once "
          "on a machine shared with other jobs, so it is the least certain number here; this bound does not use it.")
    print(f"\nH100-hours = CPU hours x {factor:.2e} (published A40: 8.6 s per 100-step window, over this CPU's "
          f"{100 * c['dit_step_full']['median_s'] + c['vae_decode_full']['median_s']:.0f} s; H100 assumed "
          f"{H100_OVER_A40}x an A40). On N GPUs divide by N (shards are independent).")
    gpu = _load("imagine_full_size_cuda.json")
    if gpu:
        print(f"\n**GPU** ({gpu['environment']['gpu']}, `imagine_full_size_cuda.json`):\n")
        print("| mode | s/prompt | clips/s | candidates/prompt | per prompt vs reference | peak GiB |")
        print("|---|---|---|---|---|---|")
        for m in gpu["modes"]:
            print(f"| {m['latent_length']}, {m['sampling']} | {m['seconds_per_prompt']:.2f} | {m['clips_per_s']:.2f} | "
                  f"{m['candidates_per_prompt']:.2f} | {m['per_prompt_speedup']:.2f}x | "
                  f"{m.get('peak_memory_bytes', 0) / 2**30:.1f} |")
    else:
        print("\nNo GPU results yet: `benchmarks/gpu_check.sh` writes them (no GPU was available when these "
              "were made).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
