"""AudioLDM2 as the second imagination model (imagine.generator=audioldm2): the tiny pipeline behind the
`AudioGenerator` protocol, its ids, its folder lookup and lock, its paper size, and a whole run.

The tiny AudioLDM2 is built once per session from config objects with locally trained tokenizers
(`profiles.ensure_tiny_audioldm2`) and loaded through `from_pretrained`, as a paper checkpoint is.
"""

from __future__ import annotations

import gc
import json
import sys
import time
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from ith_core.config import ImagineConfig
from ith_core.imagination import planning
from ith_core.imagination.generators import (
    AudioLDM2Generator,
    GeneratedAudioError,
    GenerationSettings,
    audio_id,
    candidate_seeds,
    check_generated,
    generator_identity,
    setting_notes,
)
from ith_core.models import model_lock, profiles

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from helpers.ith_process import run_ith, run_ith_json  # noqa: E402

TINY = {"num_inference_steps": 4, "num_candidates": 2, "duration_s": 1.0, "latent_length": "exact"}
PROMPTS = ("dog sound", "a loud cat purring sound")


@pytest.fixture(scope="module")
def folder(ith_home, train_corpus) -> Path:
    return profiles.ensure_tiny_audioldm2(train_corpus)


@pytest.fixture(scope="module")
def gen(folder) -> AudioLDM2Generator:
    return AudioLDM2Generator.from_folder(folder, ImagineConfig(**TINY), "cpu")


def test_candidate_alone_is_the_same_audio_as_in_a_batch(gen):
    seeds = [candidate_seeds(42, p, 2) for p in PROMPTS]
    both = gen.generate(list(PROMPTS), seeds)
    assert gen.sample_rate == 16000 and gen.channels == 1
    assert both.shape == (2, 2, 1, 16000) and both.dtype == torch.float32
    # The short prompt alone (no T5 padding) equals it beside a longer one (padded, masked).
    alone = gen.generate([PROMPTS[0]], [seeds[0]])
    assert torch.allclose(alone[0], both[0], atol=1e-4)
    # Lazy sampling asks for candidate 1 alone: the same audio as candidate 1 of a two-candidate call.
    second = gen.generate(list(PROMPTS), [s[1:] for s in seeds])
    assert second.shape == (2, 1, 1, 16000)
    assert torch.allclose(second[:, 0], both[:, 1], atol=1e-4)
    # Candidates and prompts differ: the seeds and the conditioning reach the audio.
    assert not torch.allclose(both[1, 0], both[1, 1], atol=1e-2)
    assert not torch.allclose(both[0, 0], gen.generate([PROMPTS[1]], [seeds[0][:1]])[0, 0], atol=1e-2)
    # Audible, finite audio: the stage's NaN/inf/silence check passes it.
    waves = both.reshape(-1, 1, 16000).numpy()
    check_generated(waves, [(p, k, p) for p in PROMPTS for k in range(2)], gen.settings)
    with pytest.raises(ValueError, match="same number"):
        gen.generate(list(PROMPTS), [seeds[0], seeds[1][:1]])
    assert gen.timings["denoise_clip_steps"] > 0 and gen.timings["decoded_clips"] > 0


def test_latent_length_and_decode_slices_keep_their_meaning(gen):
    # exact: 1 s is 100 mel frames (hop 160), 25 latent frames (VAE scale 4); full: the 10.24 s window.
    assert gen.latent_frames == 25
    full = AudioLDM2Generator(
        gen.pipe,
        GenerationSettings.from_config(ImagineConfig(**{**TINY, "latent_length": "full"}), gen.identity, "cpu"),
        "cpu",
    )
    assert full.latent_frames == 256 == gen.pipe.unet.config.sample_size
    assert full.generate(["dog sound"], [[7]]).shape == (1, 1, 1, 16000)
    latents = torch.randn(3, gen.latent_channels, gen.latent_frames, 16, generator=torch.Generator().manual_seed(0))
    sliced = AudioLDM2Generator(gen.pipe, gen.settings, "cpu", decode_batch_size=1).decode(latents)
    assert sliced.shape == (3, 16000) and float((sliced - gen.decode(latents)).abs().max()) < 1e-4
    with pytest.raises(ValueError, match="window of 10.24 s"):
        AudioLDM2Generator(
            gen.pipe, GenerationSettings.from_config(ImagineConfig(**{**TINY, "duration_s": 11.0}), "x", "cpu"), "cpu"
        )


def test_unusable_audio_is_refused_as_for_stable_audio(gen, monkeypatch):
    monkeypatch.setattr(gen.pipe.vocoder, "forward", lambda mel: torch.zeros(mel.shape[0], 16000))
    waves = gen.generate(["dog sound"], [[1]]).reshape(1, 1, -1).numpy()
    with pytest.raises(GeneratedAudioError, match="silent") as err:
        check_generated(waves, [("id0", 0, "dog sound")], gen.settings)
    assert err.value.audio_ids == ["id0"]


def test_ids_name_the_generator_never_stable_audio(folder, tiny_models, train_corpus, tmp_path):
    stable_id, ldm_id = generator_identity(tiny_models["generator"]), generator_identity(folder)
    assert ldm_id.startswith("tiny-audioldm2-") and stable_id != ldm_id
    assert profiles.model_identity(folder) != profiles.model_identity(tiny_models["generator"])
    cfg = ImagineConfig(**TINY)
    ids = {audio_id("dog sound", GenerationSettings.from_config(cfg, g, "cpu")) for g in (stable_id, ldm_id)}
    assert len(ids) == 2
    # What a run resolves: the tiny profile's roles, with AudioLDM2 in the generator role.
    paths = profiles.resolve_models("tiny", corpus=train_corpus, generator="audioldm2")
    assert paths["generator"] == folder and paths["clap"] == tiny_models["clap"]
    assert profiles.resolve_models("tiny", corpus=train_corpus)["generator"] == tiny_models["generator"]
    # The same recipe and corpus in another model home give the same identity (no location in it).
    assert generator_identity(profiles.ensure_tiny_audioldm2(train_corpus, str(tmp_path))) == ldm_id


def test_audio_format_is_read_from_the_configs(folder, tiny_models):
    assert planning.generator_audio_format(str(folder)) == (16000, 1)
    assert planning.generator_audio_format(str(tiny_models["generator"])) == (44100, 2)


def test_paper_checkpoint_is_looked_for_by_name(tmp_path, monkeypatch):
    monkeypatch.delenv("ITH_MODEL_AUDIOLDM2", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(profiles.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    skip = [r for r in profiles.ROLES if r != "generator"]
    with pytest.raises(profiles.ModelNotAvailableError) as err:
        profiles.resolve_models("paper", str(tmp_path), skip_roles=skip, generator="audioldm2")
    message = str(err.value)
    assert "cvssp/audioldm2" in message and "stable-audio" not in message
    assert "$ITH_MODEL_AUDIOLDM2" in message and str(tmp_path / "paper" / "audioldm2") in message
    assert "ith models fetch --profile paper --roles audioldm2" in message


def test_fetch_and_lock_know_audioldm2(folder, tmp_path, monkeypatch):
    repo = [
        "README.md",
        "model_index.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "unet/diffusion_pytorch_model.bin",
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "tokenizer_2/spiece.model",
    ]
    assert model_lock.files_to_fetch("audioldm2", repo) == [
        "model_index.json",
        "tokenizer_2/spiece.model",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
    ]
    # A folder pointed at by $ITH_MODEL_AUDIOLDM2 is locked under that name, and a run filling the
    # generator role from it is compared with that entry, not with Stable Audio's.
    monkeypatch.setenv("ITH_MODEL_AUDIOLDM2", str(folder))
    lock = model_lock.write_lock(str(tmp_path), ["audioldm2"])
    assert lock["models"]["audioldm2"]["model_id"] == "cvssp/audioldm2"
    record = model_lock.run_models("paper", {"generator": folder}, str(tmp_path), {"generator": "audioldm2"})
    entry = record["models"]["generator"]
    assert entry["model_id"] == "cvssp/audioldm2" and entry["lock"] == "matches" and entry["checkpoint"] == "audioldm2"
    with pytest.raises(Exception, match="roles"):
        model_lock.write_lock(str(tmp_path), ["audioldm3"])


def test_settings_without_a_meaning_are_named():
    notes = setting_notes(ImagineConfig(generator="audioldm2"))
    assert set(notes) == {"latent_length", "decode", "decode_batch_size"}
    assert "no effect" in notes["decode"]
    assert setting_notes(ImagineConfig()) == {}


def test_ith_config_prints_the_notes(tmp_path, ith_home):
    done = run_ith(["config", "--benchmark", "synthetic", "--set", "imagine.generator=audioldm2"], tmp_path, ith_home)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    decode = next(i for i, line in enumerate(lines) if line.split()[:1] == ["decode"])
    assert lines[decode + 1].split()[:4] == ["note:", "no", "effect", "with"]
    plain = run_ith(["config", "--benchmark", "synthetic"], tmp_path, ith_home)
    assert "note:" not in plain.stdout


def test_paper_size_audioldm2_builds_and_generates():
    """cvssp/audioldm2 at full size from its published configs, random weights: parameter counts the
    model card states (UNet 350 M, 1.1 B in all) and one 1-step generation of 5 s at 16 kHz (about
    30 s and 5 GB of RAM on 2 cores, so not marked slow)."""
    from diffusers import AudioLDM2Pipeline
    from transformers import ClapFeatureExtractor

    from ith_core.models.paper_architectures import build_paper_architecture
    from ith_core.models.tiny_builders import train_clap_tokenizer, train_t5_tokenizer

    started = time.perf_counter()
    parts = build_paper_architecture("audioldm2")
    params = {k: sum(p.numel() for p in v.parameters()) for k, v in parts.items() if hasattr(v, "parameters")}
    assert 340e6 <= params["unet"] <= 360e6
    assert 1.05e9 <= sum(params.values()) <= 1.2e9
    corpus = ["a dog barks", "rain on a tin roof", "a violin plays a high note"] * 10
    pipe = AudioLDM2Pipeline(
        tokenizer=train_clap_tokenizer(corpus, 300, 512),
        tokenizer_2=train_t5_tokenizer(corpus, 100, parts.pop("tokenizer_2_max_length")),
        feature_extractor=ClapFeatureExtractor(),
        **parts,
    )
    cfg = ImagineConfig(num_inference_steps=1, num_candidates=1, duration_s=5.0, latent_length="exact")
    gen = AudioLDM2Generator(pipe, GenerationSettings.from_config(cfg, "paper-size", "cpu"), "cpu")
    assert gen.full_frames * gen.vae_scale * gen.hop / gen.sample_rate == 10.24
    assert gen.latent_frames == 125  # 5 s: 500 mel frames of 10 ms
    audio = gen.generate(["dog barking sound"], [[3]])
    assert audio.shape == (1, 1, 1, 80000) and bool(torch.isfinite(audio).all())
    print(f"paper-size AudioLDM2: {time.perf_counter() - started:.1f} s")
    parts.clear()
    del pipe, gen
    gc.collect()


@pytest.mark.slow
def test_ith_run_with_audioldm2_completes_every_stage(tmp_path, ith_home):
    """`ith run --benchmark synthetic --set imagine.generator=audioldm2` on the tiny profile, small
    sizes: every stage runs on AudioLDM2's 16 kHz audio (about 2 minutes on 2 cores)."""
    sizes = {
        "synthetic.names.train": 8,
        "synthetic.names.dev": 4,
        "synthetic.names.test": 4,
        "synthetic.names.wiki": 4,
        "synthetic.rows_per_name.train": 2,
        "synthetic.rows_per_name.dev": 1,
        "synthetic.rows_per_name.test": 1,
        "synthetic.rows_per_name.wiki": 1,
        "span.epochs": 1,
        "fusion.epochs": 1,
    }
    settings = [arg for key, value in sizes.items() for arg in ("--set", f"{key}={value}")]
    args = ["run", "--benchmark", "synthetic", "--run-root", str(tmp_path / "runs")]
    result = run_ith_json([*args, "--set", "imagine.generator=audioldm2", *settings], tmp_path, ith_home)
    run = Path(result["run_dir"])
    assert json.loads((run / "config.json").read_text())["imagine"]["generator"] == "audioldm2"
    stages = result["stages"]
    assert stages["ingest"]["accepted"] > 0 and stages["spans"]["examples"] > 0
    imagine = stages["imagine"]
    assert imagine["candidates"] >= imagine["unique_prompts"] > 0 and imagine["shards"]["failed"] == 0
    plan = json.loads((run / "imagine" / "plan.json").read_text())
    assert plan["settings"]["generator_id"].startswith("tiny-audioldm2-")
    assert json.loads((run / "models.json").read_text())["models"]["generator"]["identity"].startswith(
        "tiny-audioldm2-"
    )
    # The stored audio is AudioLDM2's: 16 kHz mono, duration_s long.
    clips = sorted((tmp_path / "runs" / "_imagine" / "audio").rglob("*.wav"))
    assert len(clips) == imagine["candidates"]
    for clip in clips[:3]:
        with wave.open(str(clip)) as w:
            assert (w.getframerate(), w.getnchannels(), w.getnframes()) == (16000, 1, 16000)
    # Fusion trained and evaluated every system on it, and the report was written.
    results = json.loads((run / "fusion" / "results.json").read_text())
    assert {r["model"] for r in results["per_seed"]} >= {"ith", "bert-text"}
    assert np.isfinite([r["accuracy"] for r in results["per_seed"]]).all()
    assert (run / "report" / "report.md").is_file() and Path(result["summary"]).is_file()
    # The same run imagined by Stable Audio, and `ith compare` sets the two side by side: one column
    # per run headed by its generator, then Stable Audio minus AudioLDM2 on the rows both scored.
    other = run_ith_json([*args, "--set", "imagine.generator=stable-audio", *settings], tmp_path, ith_home)
    assert other["run_id"] != result["run_id"]
    compared = run_ith(
        ["compare", result["run_id"], other["run_id"], "--run-root", str(tmp_path / "runs")], tmp_path, ith_home
    )
    assert compared.returncode == 0, compared.stderr[-3000:]
    header = next(line for line in compared.stdout.splitlines() if line.startswith("| system"))
    assert f"{result['run_id']} (audioldm2" in header and f"{other['run_id']} (stable-audio" in header
    assert "minus" in compared.stdout
