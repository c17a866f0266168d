"""The paper's models at full size, random weights: shapes and parameter counts the method states.

No download is involved: the architectures come from the checkpoint configs written out in
`ith_core.models.paper_architectures`. Each test builds one role, runs one forward pass on CPU and frees it.
Run with `pytest -m slow tests/test_paper_architectures.py` (about a minute and 7 GB of RAM).
"""

from __future__ import annotations

import gc
import math

import numpy as np
import pytest
import torch

from ith_core.models.paper_architectures import build_paper_architecture

pytestmark = pytest.mark.slow


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _sine(seconds: float, sample_rate: int) -> np.ndarray:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return (0.5 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)


@pytest.fixture
def built(request):
    """build_paper_architecture(role) for the test's parameter, freed afterwards."""
    parts = build_paper_architecture(request.param)
    yield parts
    parts.clear()
    gc.collect()


@pytest.mark.parametrize("built", ["lm"], indirect=True)
def test_bert_base_uncased(built):
    mlm, classifier = built["mlm"], built["token_classifier"]
    assert 105e6 <= _params(mlm) <= 115e6  # method: BERT-base ~110 M
    ids = torch.randint(1000, 30522, (2, 16))
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        assert mlm(input_ids=ids, attention_mask=mask).logits.shape == (2, 16, 30522)
        assert classifier(input_ids=ids, attention_mask=mask).logits.shape == (2, 16, 2)


@pytest.mark.parametrize("built", ["roberta"], indirect=True)
def test_roberta_base(built):
    """roberta-base at full size (125 M parameters, 50265 tokens), through the fusion model's text-only
    path with the pitch head's two words, the way the RoBERTa-base rows are scored."""
    from ith_core.fusion.model import FusionLM

    mlm = built["mlm"]
    assert 120e6 <= _params(mlm) <= 130e6  # roberta-base: 124.6 M with its tied MLM head
    model = FusionLM(mlm, audio_dim=None, num_heads=12, ffn_dim=3072, dropout=0.1, fusion=False).eval()
    ids = torch.randint(4, 50265, (2, 20))
    ids[:, 0], ids[:, -1] = 0, 2  # <s> ... </s>
    mask = torch.ones_like(ids)
    mask[1, 15:] = 0
    ids[1, 15:] = 1  # <pad>
    with torch.inference_mode():
        logits = model(input_ids=ids, attention_mask=mask).logits
    assert logits.shape == (2, 20, 50265) and torch.isfinite(logits).all()


@pytest.mark.parametrize("built", ["generator"], indirect=True)
def test_stable_audio_open(built):
    from diffusers.models.embeddings import get_1d_rotary_pos_embed

    dit, vae, text_encoder, projection = (
        built["transformer"],
        built["vae"],
        built["text_encoder"],
        built["projection_model"],
    )
    # method: ~1.06 B DiT + Oobleck VAE + T5-base encoder; its "~1.2 B" total rounds down the
    # sum of the published component sizes (1.057 B + 0.156 B + 0.110 B = 1.32 B).
    assert 1.0e9 <= _params(dit) <= 1.12e9
    assert 150e6 <= _params(vae) <= 162e6
    assert 105e6 <= _params(text_encoder) <= 115e6
    assert 1.15e9 <= sum(_params(m) for m in (dit, vae, text_encoder, projection)) <= 1.35e9

    seconds, sample_rate = 5.0, vae.config.sampling_rate
    latent_frames = math.ceil(seconds * sample_rate / vae.hop_length)
    with torch.inference_mode():
        ids = torch.randint(2, 32128, (1, built["tokenizer_max_length"]))
        text = text_encoder(ids, attention_mask=torch.ones_like(ids)).last_hidden_state
        assert text.shape == (1, 128, 768)
        cond = projection(
            text_hidden_states=text, start_seconds=torch.tensor([0.0]), end_seconds=torch.tensor([seconds])
        )
        # As StableAudioPipeline assembles them: the text tokens plus the two timing tokens for
        # cross-attention, the two timing embeddings side by side as the global condition.
        timing = [cond.seconds_start_hidden_states, cond.seconds_end_hidden_states]
        cross = torch.cat([cond.text_hidden_states, *timing], dim=1)
        global_states = torch.cat(timing, dim=2)
        assert cross.shape == (1, 130, 768) and global_states.shape == (1, 1, 1536)
        rotary = get_1d_rotary_pos_embed(
            dit.config.attention_head_dim // 2, latent_frames + 1, use_real=True, repeat_interleave_real=False
        )
        latents = torch.randn(1, dit.config.in_channels, latent_frames)
        velocity = dit(
            latents,
            torch.tensor([0.5]),
            encoder_hidden_states=cross,
            global_hidden_states=global_states,
            rotary_embedding=rotary,
            return_dict=False,
        )[0]
        assert velocity.shape == (1, 64, 108)
        audio = vae.decode(velocity).sample
    assert audio.shape == (1, 2, 108 * 2048) and sample_rate == 44100
    assert torch.isfinite(audio).all()


@pytest.mark.parametrize("built", ["clap"], indirect=True)
def test_clap_htsat_fused(built):
    model, feature_extractor = built["model"], built["feature_extractor"]
    assert 140e6 <= _params(model) <= 160e6  # method: ~150 M
    assert model.config.audio_config.enable_fusion
    inputs = feature_extractor([_sine(5.0, 48000)], sampling_rate=48000, return_tensors="pt")
    # Fusion: 4 mel views of 10 s (1001 frames x 64 bins); 5 s clips are repeat-padded.
    assert inputs["input_features"].shape == (1, 4, 1001, 64)
    # When no clip of a batch is longer than 10 s, the extractor flags one at random as longer
    # (a training trick kept in transformers), which sends it through the fusion branch: a scorer
    # that wants batch-independent scores must set is_longer from the true clip lengths.
    assert inputs["is_longer"].tolist() == [[True]]
    ids = torch.cat([torch.tensor([[0]]), torch.randint(4, 50264, (1, 8)), torch.tensor([[2]])], dim=1)
    with torch.inference_mode():
        audio = model.get_audio_features(**inputs)
        text = model.get_text_features(input_ids=ids, attention_mask=torch.ones_like(ids))
    for features in (audio, text):
        pooled = features.pooler_output if hasattr(features, "pooler_output") else features
        assert pooled.shape == (1, 512)


@pytest.mark.parametrize("built", ["audio_encoder"], indirect=True)
def test_ast_audioset(built):
    model, feature_extractor = built["model"], built["feature_extractor"]
    assert 84e6 <= _params(model) <= 88e6  # method: ~86 M
    inputs = feature_extractor(_sine(10.0, 16000), sampling_rate=16000, return_tensors="pt")
    assert inputs["input_values"].shape == (1, 1024, 128)
    with torch.inference_mode():
        hidden = model(**inputs).last_hidden_state
    # 12 frequency x 101 time patches (16 x 16, stride 10) plus the CLS and distillation tokens.
    assert hidden.shape == (1, 1214, 768)
