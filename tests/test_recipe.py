"""The `paper` profile is the method's recipe; the reference code's behaviours are settings.

Values below are transcribed from ../shared/ith-method.md (the method) and the reference release
uso7d0/ImagineToHear (27c7a0f), as cited per line; the table "Differences from the reference
code" in docs/recipe.md lists every place where the two disagree and which one the default follows.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from ith_core.config import RunConfig

REPO = Path(__file__).resolve().parents[1]


def _config(*args: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "cli.main", "config", *args, "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def test_paper_profile_is_the_method():
    cfg = _config("--profile", "paper")
    span, imagine, fusion = cfg["span"], cfg["imagine"], cfg["fusion"]
    # Stage 1: BertForTokenClassification, 5 epochs, batch 16, AdamW lr 1e-5, max length 128 (method);
    # transformers.AdamW's eps 1e-6 and weight decay 0, constant lr (reference SD/train.py:103).
    assert (span["source"], span["epochs"], span["batch_size"], span["learning_rate"], span["max_length"]) == (
        "detected",
        5,
        16,
        1e-5,
        128,
    )
    assert (span["weight_decay"], span["adam_epsilon"], span["lr_schedule"]) == (0.0, 1e-6, "constant")
    # Stage 2: stable-audio-open-1.0, fp16 on GPU, "{span} sound" / "sound", "Low quality", 50 steps, 5 s,
    # 5 waveforms, guidance 7, seed 42, the full latent window.
    assert imagine["generator"] == "stable-audio" and imagine["dtype"] == "auto"
    assert (imagine["prompt_template"], imagine["fallback_prompt"], imagine["negative_prompt"]) == (
        "{span} sound",
        "sound",
        "Low quality",
    )
    assert (
        imagine["num_inference_steps"],
        imagine["duration_s"],
        imagine["num_candidates"],
        imagine["guidance_scale"],
        imagine["seed"],
        imagine["latent_length"],
    ) == (50, 5.0, 5, 7.0, 42, "full")
    # Stage 3: thresholds animal 0.4, pitch 0.3; the grid 0, 0.2, ..., 0.8.
    assert imagine["thresholds"] == {"animal": 0.4, "pitch": 0.3}
    assert imagine["threshold_grid"] == [0.0, 0.2, 0.4, 0.6, 0.8]
    # Stages 4-5: AST trained end to end on all its tokens, fusion on the embedding output, 12 heads,
    # FFN 3072, dropout 0.1; AdamW (weight decay 0.01), batch 32, cosine with 10 % warmup, animal lr
    # 3e-4, pitch 4e-5, 8 epochs; gradients clipped at 1.0 and fp32 (reference trainer.py, train.py).
    assert fusion["train_audio_encoder"] is True and fusion["audio_tokens"] is None
    # One learning rate for every weight, AST included, and its tokens fed to the MLP as they are.
    assert fusion["audio_encoder_lr_scale"] == 1.0 and fusion["standardize_audio"] is None
    assert (fusion["fusion_layer"], fusion["num_heads"], fusion["ffn_dim"], fusion["dropout"]) == (-1, 12, 3072, 0.1)
    assert fusion["learning_rates"] == {"animal": 3e-4, "pitch": 4e-5}
    assert (fusion["batch_size"], fusion["epochs"], fusion["weight_decay"]) == (32, 8, 0.01)
    assert fusion["warmup_ratios"] == {"animal": 0.1, "pitch": 0.1}
    assert fusion["max_grad_norm"] == 1.0 and fusion["mixed_precision"] == "no"
    assert cfg["data"]["sample_limit"] is None and cfg["benchmark"] == "auditorybench"


def test_config_shows_the_overrides_and_the_run_id():
    cfg = _config(
        "--profile",
        "paper",
        "--set",
        "fusion.train_audio_encoder=false",
        "--set",
        "imagine.thresholds.animal=0.6",
        "--set",
        'span.source="gold"',
    )
    assert cfg["fusion"]["train_audio_encoder"] is False
    assert cfg["imagine"]["thresholds"] == {"animal": 0.6, "pitch": 0.3}
    assert cfg["span"]["source"] == "gold"
    assert cfg["run_id"] == RunConfig.from_dict({k: v for k, v in cfg.items() if k != "run_id"}).effective_run_id
    synthetic = _config("--benchmark", "synthetic")
    assert synthetic["run_id"].startswith("tiny-synthetic-")
    assert synthetic["imagine"]["generator"] == "tone" and synthetic["data"]["sample_limit"] is None


def test_config_rejects_bad_settings_in_one_line_each():
    out = subprocess.run(
        [sys.executable, "-m", "cli.main", "config", "--set", "fusion.max_grad_norm=0", "--set", 'span.source="both"'],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert "fusion.max_grad_norm must be > 0, got 0" in out.stderr
    assert "span.source must be 'detected' or 'gold', got 'both'" in out.stderr


def test_gold_spans_follow_the_reference_string_match():
    from ith_core.models.span_detector import gold_spans

    rows = [
        {
            "example_id": "pitch/dev/00001",
            "sentence": "The Sound of a Flute is [MASK] than a drum.",
            "spans": ["sound of a flute", "drum"],
        },
        # Not in the sentence: left out and counted (the reference fuses at [CLS] instead).
        {"example_id": "animal/dev/00002", "sentence": "A [MASK] makes a chirping noise.", "spans": ["loud roar"]},
    ]
    records, not_found = gold_spans(rows)
    assert not_found == 1
    assert [(r.example_id, r.span_index, r.span_text, r.char_start, r.char_end) for r in records] == [
        ("pitch/dev/00001", 0, "Sound of a Flute", 4, 20),
        ("pitch/dev/00001", 1, "drum", 38, 42),
    ]


def test_gradients_are_clipped_in_the_training_loop(monkeypatch, tmp_path, tiny_models):
    """The production training loop clips before every optimiser step (reference: 1.0)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from helpers.fusion_task import fusion_settings, make_task

    from ith_core.fusion.audio_features import precompute_audio_features, read_selection
    from ith_core.fusion.training import TrainJob, TrainSpec, train_job
    from ith_core.models.profiles import load_audio_encoder
    from storage.features import FeatureStore
    from storage.layout import RunLayout

    task = make_task(tmp_path, n_train_names=8, n_heldout_names=3, duration_s=0.5)
    encoder, extractor = load_audio_encoder(tiny_models["audio_encoder"])
    precompute_audio_features(
        read_selection(task["selection"]),
        encoder,
        extractor,
        FeatureStore(RunLayout(str(tmp_path), "run"), "features"),
        trainable_encoder=False,
        audio_tokens=8,
    )
    norms: list[float] = []
    step = torch.optim.AdamW.step

    def recording_step(self, *args, **kwargs):
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording_step)

    def train(max_grad_norm, out):
        norms.clear()
        spec = TrainSpec(
            lm_path=str(tiny_models["lm"]),
            examples_path=task["examples"],
            output_dir=str(out),
            selection_path=task["selection"],
            features_dir=str(tmp_path / "run" / "features"),
            fusion=fusion_settings(epochs=1, batch_size=8, audio_tokens=8, max_grad_norm=max_grad_norm),
            jobs=(TrainJob("pitch", "ith", 3),),
        )
        train_job(spec, spec.jobs[0])
        return list(norms)

    unclipped = train(None, tmp_path / "free")
    clipped = train(0.05, tmp_path / "clipped")
    assert len(clipped) == len(unclipped) == 4  # 32 train rows / batch 8
    assert min(unclipped) > 0.05, unclipped
    assert max(clipped) <= 0.05 * (1 + 1e-4), clipped
