"""Paper-size component timings of AudioLDM2 (imagine.generator=audioldm2) on this machine, beside Stable Audio's.

    .venv/bin/python benchmarks/bench_audioldm2_size.py --threads 1     # about 5 minutes on 2 cores

cvssp/audioldm2 at full size, built from its published component configs
(`ith_core.models.paper_architectures`, role `audioldm2`) with random weights (nothing is
downloaded); its tokenizers are trained on AuditoryBench's sentences, as the tiny profile's are, so
token counts differ a little from the real RoBERTa and T5 vocabularies. Timed through the
production generator (`AudioLDM2Generator`), one clip at a time as bench_paper_size.py times Stable
Audio: text encoding of the prompt and the negative prompt (CLAP text tower, Flan-T5-large, and
GPT-2 generating its 8 states for each), GPT-2's 8-state generation alone, one denoising step of one
5 s clip (classifier-free guidance: UNet batch 2) over the exact 125 latent frames and over the
model's whole 256-frame window (10.24 s, `latent_length=full`), and the decode of 5 s: VAE to a mel
spectrogram, HiFi-GAN to 16 kHz, and both as `decode` runs them. Median of `--repeats` calls; peak
resident memory above the baseline as in bench_paper_size.py. Writes
benchmarks/results/audioldm2_size_cpu.json; results_table.py prints it in docs/performance.md next
to Stable Audio's paper_size_cpu.json.
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

from bench_paper_size import DURATION_S, paper_environment, timed  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
PROMPT = "dog barking sound"
NEGATIVE = "Low quality"


def build(threads: int):
    """The full-size AudioLDM2Pipeline with random weights, and an `exact` and a `full` generator over it."""
    import torch
    from diffusers import AudioLDM2Pipeline
    from transformers import ClapFeatureExtractor

    from ith_core.config import ImagineConfig
    from ith_core.data import auditorybench
    from ith_core.imagination.generators import AudioLDM2Generator, GenerationSettings
    from ith_core.models.paper_architectures import build_paper_architecture
    from ith_core.models.tiny_builders import train_clap_tokenizer, train_t5_tokenizer

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    examples = auditorybench.ingest(auditorybench.locate(None), splits=("train",)).examples
    corpus = examples["sentence"].to_pylist() + [s for row in examples["spans"].to_pylist() for s in row]
    print("building full-size AudioLDM2 (random weights)", flush=True)
    parts = build_paper_architecture("audioldm2")
    params = {k: sum(p.numel() for p in v.parameters()) for k, v in parts.items() if hasattr(v, "parameters")}
    pipe = AudioLDM2Pipeline(
        tokenizer=train_clap_tokenizer(corpus, 5000, 512),
        tokenizer_2=train_t5_tokenizer(corpus, 5000, parts.pop("tokenizer_2_max_length")),
        feature_extractor=ClapFeatureExtractor(),
        **parts,
    )
    gens = {}
    for latent in ("exact", "full"):
        cfg = ImagineConfig(negative_prompt=NEGATIVE, duration_s=DURATION_S, latent_length=latent, dtype="float32")
        gens[latent] = AudioLDM2Generator(pipe, GenerationSettings.from_config(cfg, "paper-size", "cpu"), "cpu")
    return pipe, gens, params


def measure(threads: int, repeats: int) -> dict:
    import torch

    pipe, gens, params = build(threads)
    exact, full = gens["exact"], gens["full"]
    out: dict = {
        "parameters": params,
        "frames": {"exact": exact.latent_frames, "full": full.latent_frames},
        "window_s": full.full_frames * full.vae_scale * full.hop / full.sample_rate,
        "sample_rate": exact.sample_rate,
        "components": {},
    }
    comp = out["components"]
    with torch.inference_mode():
        print("text encoding: CLAP + T5 + GPT-2 (8 states), prompt and negative prompt", flush=True)

        def encode():
            exact._encoded.clear()
            return exact.encode(PROMPT)[0].shape[1]

        comp["text_encode"] = timed(encode, repeats)
        comp["text_encode"]["t5_tokens"] = comp["text_encode"].pop("result")
        embeds, mask = pipe.encode_prompt(PROMPT, "cpu", 1, False)[:2]  # warm, and the T5 states of one prompt
        clap = pipe.text_encoder.get_text_features(
            **pipe.tokenizer(PROMPT, padding="max_length", max_length=512, truncation=True, return_tensors="pt")
        )
        clap = getattr(clap, "pooler_output", clap)[:, None, :]
        projected = pipe.projection_model(
            hidden_states=clap,
            hidden_states_1=embeds,
            attention_mask=torch.ones(1, 1, dtype=torch.long),
            attention_mask_1=mask,
        )
        print("GPT-2 generating 8 states (one prompt)", flush=True)
        comp["gpt2_generate_8"] = timed(
            lambda: pipe.generate_language_model(
                projected.hidden_states, attention_mask=projected.attention_mask, max_new_tokens=8
            ).shape[1],
            repeats,
        )
        comp["gpt2_generate_8"]["states"] = comp["gpt2_generate_8"].pop("result")
        for name, gen in (("denoise_step_exact", exact), ("denoise_step_full", full)):
            gen.encode(PROMPT)  # encoded once per prompt in the stage, timed above
            print(f"one denoising step, {gen.latent_frames} latent frames, CFG batch 2", flush=True)
            comp[name] = timed(lambda gen=gen: tuple(gen._denoise([PROMPT], [0], 1, 1).shape), repeats)
            comp[name]["latent_shape"] = list(comp[name].pop("result"))
        latents = torch.randn(1, exact.latent_channels, exact.latent_frames, exact.mel_bins // exact.vae_scale)
        mel = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
        print(f"VAE decode of {DURATION_S} s ({exact.latent_frames} latent frames)", flush=True)
        comp["vae_decode_5s"] = timed(lambda: tuple(pipe.vae.decode(latents).sample.shape), repeats)
        comp["vae_decode_5s"]["mel_shape"] = list(comp["vae_decode_5s"].pop("result"))
        print(f"HiFi-GAN vocoder, {DURATION_S} s", flush=True)
        comp["vocoder_5s"] = timed(lambda: pipe.vocoder(mel.squeeze(1)).shape[-1], repeats)
        comp["vocoder_5s"]["samples"] = comp["vocoder_5s"].pop("result")
        print(f"decode as the generator runs it (VAE + vocoder, cropped to {DURATION_S} s)", flush=True)
        comp["decode_5s"] = timed(lambda: exact.decode(latents).shape[-1], repeats)
        comp["decode_5s"]["samples"] = comp["decode_5s"].pop("result")
    for value in comp.values():
        value.pop("result", None)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as bench_paper_size.py)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per component (the median is kept)")
    parser.add_argument("--out", default=str(RESULTS / "audioldm2_size_cpu.json"))
    args = parser.parse_args()
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    result = {
        "benchmark": "audioldm2_paper_size_components",
        "model": "cvssp/audioldm2 (architecture from its published configs, random weights)",
        "environment": {**paper_environment(args.threads), "load_1min_at_start": round(load_before, 2)},
        "settings": {"duration_s": DURATION_S, "guidance_scale": 7.0, "repeats": args.repeats, "prompt": PROMPT},
        "measured": measure(args.threads, args.repeats),
    }
    result["environment"]["load_1min_at_end"] = round(os.getloadavg()[0], 2)
    result["wall_s"] = round(time.perf_counter() - started, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v["median_s"] for k, v in result["measured"]["components"].items()}, indent=2))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
