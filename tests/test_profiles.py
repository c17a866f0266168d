"""Model profiles: the tiny profile builds, caches and round-trips through from_pretrained;
the paper profile is found where it should be and fails fast and clearly where it is not."""

from __future__ import annotations

import csv
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ith_core.config import ConfigError
from ith_core.models import tiny_builders as tiny_models
from ith_core.models.profiles import (
    PAPER_MODELS,
    ROLES,
    ModelNotAvailableError,
    ensure_tiny_profile,
    load_audio_encoder,
    load_clap,
    load_generator,
    load_lm,
    load_span_base,
    model_home,
    model_status,
    resolve_models,
)


def _read_column(path: Path, column: str) -> list[str]:
    with path.open(newline="", encoding="utf-8") as handle:
        return [row[column] for row in csv.DictReader(handle)]


@pytest.fixture(scope="session")
def corpus(bench_dir) -> list[str]:
    return _read_column(bench_dir / "animal_sound_recognition" / "train.csv", "sentence") + _read_column(
        bench_dir / "sound_pitch_comparison" / "train.csv", "sentence"
    )


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tiny_models")


@pytest.fixture(scope="session")
def tiny(corpus, tiny_dir) -> dict[str, Path]:
    return ensure_tiny_profile(corpus, model_dir=str(tiny_dir))


@pytest.fixture
def no_paper_sources(monkeypatch, tmp_path) -> Path:
    """No ITH_MODEL_* variables, an empty ITH_HOME and an empty Hugging Face cache."""
    import huggingface_hub.constants

    for role in ROLES:
        monkeypatch.delenv(f"ITH_MODEL_{role.upper()}", raising=False)
    home = tmp_path / "ith_home"
    monkeypatch.setenv("ITH_HOME", str(home))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    return home


def _sine(seconds: float, sample_rate: int, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def _pooled(features) -> torch.Tensor:
    # transformers 5 returns an output object from get_*_features; older versions a tensor.
    return features.pooler_output if hasattr(features, "pooler_output") else features


# ----------------------------------------------------------------------------------------------
# Where models live


def test_model_home_prefers_explicit_then_ith_home_then_user_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.delenv("ITH_HOME", raising=False)
    assert model_home() == tmp_path / "user" / ".cache" / "ith" / "models"
    monkeypatch.setenv("ITH_HOME", str(tmp_path / "ith"))
    assert model_home() == tmp_path / "ith" / "models"
    assert model_home(str(tmp_path / "explicit")) == tmp_path / "explicit"


# ----------------------------------------------------------------------------------------------
# Tiny profile: layout, caching, determinism, atomicity


def test_tiny_profile_has_one_folder_per_role_and_a_marker(tiny, tiny_dir):
    assert set(tiny) == set(ROLES)
    profile = tiny["lm"].parent
    assert profile.parent == tiny_dir
    assert profile.name.startswith("tiny-") and len(profile.name) == len("tiny-") + 16
    assert all(tiny[role] == profile / role and tiny[role].is_dir() for role in ROLES)
    marker = (profile / "profile.json").read_text()
    assert profile.name.removeprefix("tiny-") in marker
    assert not list(tiny_dir.glob(".tiny-*")), "a staging folder was left behind"


def test_second_call_reuses_the_profile_without_rebuilding(tiny, corpus, tiny_dir):
    marker = tiny["lm"].parent / "profile.json"
    weights = tiny["lm"] / "model.safetensors"
    before = (marker.stat().st_mtime_ns, marker.stat().st_ino, weights.stat().st_mtime_ns)
    # The same sentences in another order are the same corpus. Untouched marker and weights (same
    # inode, same mtime) show that nothing was rebuilt.
    again = ensure_tiny_profile(list(reversed(corpus)), model_dir=str(tiny_dir))
    assert again == tiny
    assert (marker.stat().st_mtime_ns, marker.stat().st_ino, weights.stat().st_mtime_ns) == before


def test_builds_are_deterministic_and_the_corpus_names_the_folder(tiny, corpus, tmp_path):
    small = corpus[::40]
    first = ensure_tiny_profile(small, model_dir=str(tmp_path / "a"))
    second = ensure_tiny_profile(small, model_dir=str(tmp_path / "b"))
    assert first["lm"].parent.name == second["lm"].parent.name
    assert first["lm"].parent.name != tiny["lm"].parent.name
    for role, weights in [
        ("lm", "model.safetensors"),
        ("clap", "model.safetensors"),
        ("generator", "transformer/diffusion_pytorch_model.safetensors"),
    ]:
        a, b = load_file(first[role] / weights), load_file(second[role] / weights)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), f"{role} weights differ between two builds"
    for tokenizer in ["lm/tokenizer.json", "generator/tokenizer/tokenizer.json", "clap/tokenizer.json"]:
        role, _, rest = tokenizer.partition("/")
        assert (first[role] / rest).read_bytes() == (second[role] / rest).read_bytes(), tokenizer


def test_failed_build_leaves_nothing_that_looks_complete(corpus, tmp_path, monkeypatch):
    def broken_builder(corpus, out_dir):
        raise RuntimeError("injected failure")

    monkeypatch.setitem(tiny_models.BUILDERS, "clap", broken_builder)
    with pytest.raises(RuntimeError, match="injected failure"):
        ensure_tiny_profile(corpus[::100], model_dir=str(tmp_path))
    assert list(tmp_path.iterdir()) == []
    assert not any(row["available"] for row in model_status("tiny", model_dir=str(tmp_path)))


def test_damaged_profile_is_rebuilt(corpus, tmp_path):
    paths = ensure_tiny_profile(corpus[::100], model_dir=str(tmp_path))
    shutil.rmtree(paths["clap"])
    assert ensure_tiny_profile(corpus[::100], model_dir=str(tmp_path)) == paths
    load_clap(paths["clap"])
    assert [p.name for p in tmp_path.iterdir()] == [paths["clap"].parent.name]


def test_corpus_is_validated(tmp_path):
    with pytest.raises(ConfigError, match="corpus"):
        ensure_tiny_profile([], model_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="corpus"):
        ensure_tiny_profile("a single string", model_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="corpus"):
        resolve_models("tiny", model_dir=str(tmp_path))


# ----------------------------------------------------------------------------------------------
# Tiny profile: every role round-trips through from_pretrained


def test_lm_masked_lm_forward(tiny):
    model, tokenizer = load_lm(tiny["lm"])
    assert type(model).__name__ == "BertForMaskedLM"
    assert 2500 <= len(tokenizer) <= 3100
    batch = tokenizer(
        ["A [MASK] makes a sound like a continuous, high-pitched whine."] * 16,
        padding="max_length",
        max_length=128,
        return_tensors="pt",
    )
    assert (batch["input_ids"][:, 2] == tokenizer.mask_token_id).all()
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (16, 128, len(tokenizer))


def test_pitch_words_are_single_tokens(tiny, corpus):
    _, tokenizer = load_lm(tiny["lm"])
    for word in ("higher", "lower"):
        assert tokenizer.tokenize(word) == [word]
        assert tokenizer.tokenize(word.upper()) == [word]
    # The animal sentences alone never contain the words (their [MASK] hides animal names).
    animal_only = [s for s in corpus if "higher" not in s.lower() and "lower" not in s.lower()][:300]
    trained = tiny_models.train_bert_tokenizer(animal_only, vocab_size=500, model_max_length=128)
    assert trained.tokenize("higher lower") == ["higher", "lower"]


def test_span_detector_loads_from_the_lm_folder(tiny):
    classifier, tokenizer = load_span_base(tiny["lm"])
    masked_lm, _ = load_lm(tiny["lm"])
    assert classifier.config.num_labels == 2
    # The encoder is the checkpoint's, not a fresh random one.
    assert torch.equal(
        classifier.bert.embeddings.word_embeddings.weight, masked_lm.bert.embeddings.word_embeddings.weight
    )
    batch = tokenizer(["the rattle of an air conditioner", "a dog barks"], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = classifier(**batch).logits
    assert logits.shape == (2, batch["input_ids"].shape[1], 2)


def test_generator_pipeline_generates_stereo_44k_audio(tiny):
    pipe = load_generator(tiny["generator"])
    assert type(pipe).__name__ == "StableAudioPipeline"
    sample_rate = pipe.vae.config.sampling_rate
    assert sample_rate == 44100 and pipe.vae.hop_length == 2048
    audio = pipe(
        ["dog barking sound", "sound"],
        negative_prompt=["Low quality", "Low quality"],
        num_inference_steps=3,
        audio_end_in_s=5.0,
        num_waveforms_per_prompt=2,
        guidance_scale=7.0,
        generator=torch.Generator().manual_seed(42),
    ).audios
    assert audio.shape == (4, 2, int(5.0 * sample_rate))
    assert torch.isfinite(audio).all()
    assert load_generator(tiny["generator"], torch_dtype=torch.bfloat16).transformer.dtype == torch.bfloat16


def test_clap_embeds_text_and_48k_audio(tiny):
    model, processor = load_clap(tiny["clap"])
    assert processor.feature_extractor.sampling_rate == 48000
    assert model.config.audio_config.enable_fusion
    audio = processor(audio=[_sine(5.0, 48000), _sine(5.0, 48000, hz=880.0)], sampling_rate=48000, return_tensors="pt")
    text = processor(text=["dog barking", "sound"], padding=True, return_tensors="pt")
    with torch.no_grad():
        audio_embeds = _pooled(model.get_audio_features(**audio))
        text_embeds = _pooled(model.get_text_features(**text))
    dim = model.config.projection_dim
    assert audio_embeds.shape == (2, dim) and text_embeds.shape == (2, dim)
    scores = torch.nn.functional.cosine_similarity(text_embeds, audio_embeds)
    assert scores.shape == (2,) and torch.isfinite(scores).all()


def test_audio_encoder_keeps_the_paper_patch_geometry(tiny):
    model, feature_extractor = load_audio_encoder(tiny["audio_encoder"])
    assert feature_extractor.sampling_rate == 16000
    inputs = feature_extractor(
        [_sine(5.0, 16000), _sine(5.0, 16000, hz=220.0)], sampling_rate=16000, return_tensors="pt"
    )
    with torch.no_grad():
        hidden = model(**inputs).last_hidden_state
    # The paper's patch geometry (16 x 16 patches, strides 10 x 10, 128 mel bins) over the tiny
    # 128-frame window: 12 frequency x 12 time patches + 2 (CLS, distillation); 1024 frames give 1214.
    from ith_core.fusion.audio_features import ast_token_count

    assert ast_token_count(1024) == 1214
    assert hidden.shape == (2, ast_token_count(128), model.config.hidden_size) == (2, 146, model.config.hidden_size)


def test_tiny_status_reports_the_built_profile_without_building(tiny, tiny_dir, tmp_path):
    rows = model_status("tiny", model_dir=str(tiny_dir))
    assert [row["role"] for row in rows] == list(ROLES)
    assert all(row["available"] and row["path"] == tiny[row["role"]] for row in rows)
    empty = tmp_path / "never_created"
    rows = model_status("tiny", model_dir=str(empty))
    assert not any(row["available"] for row in rows) and not empty.exists()


# ----------------------------------------------------------------------------------------------
# Paper profile


def test_paper_models_missing_offline_fail_fast_with_places_and_fix(no_paper_sources, tmp_path):
    started = time.perf_counter()
    with pytest.raises(ModelNotAvailableError) as caught:
        resolve_models("paper")
    # No hub back-off (that takes minutes offline); a generous bound, not a speed target.
    assert time.perf_counter() - started < 60.0
    message = str(caught.value)
    for role, spec in PAPER_MODELS.items():
        assert spec.model_id in message
        assert str(no_paper_sources / "models" / "paper" / role) in message
        assert f"ITH_MODEL_{role.upper()}" in message
    assert str(tmp_path / "hf_cache" / "models--laion--clap-htsat-fused") in message
    assert "hf download bert-base-uncased" in message
    assert "licence" in message and "log in" in message
    rows = model_status("paper")
    assert [row["available"] for row in rows] == [False] * len(ROLES)
    assert all(len(row["looked_in"]) >= 3 and row["path"] is None for row in rows)


def test_paper_lm_from_env_folder(no_paper_sources, tiny, tmp_path, monkeypatch):
    folder = tmp_path / "my_bert"
    shutil.copytree(tiny["lm"], folder)
    monkeypatch.setenv("ITH_MODEL_LM", str(folder))
    rows = {row["role"]: row for row in model_status("paper")}
    assert rows["lm"]["available"] and rows["lm"]["path"] == folder
    assert not rows["clap"]["available"]
    with pytest.raises(ModelNotAvailableError) as caught:
        resolve_models("paper")
    assert "lm:" not in str(caught.value) and "clap:" in str(caught.value)
    model, _ = load_lm(rows["lm"]["path"])
    assert type(model).__name__ == "BertForMaskedLM"


def test_paper_profile_resolves_from_model_home_and_hub_cache(no_paper_sources, tiny, monkeypatch):
    import huggingface_hub.constants

    for role in ("lm", "roberta", "generator"):
        shutil.copytree(tiny[role], no_paper_sources / "models" / "paper" / role)
    # The Hugging Face cache layout: refs/main names a snapshot folder holding the files.
    cache = Path(huggingface_hub.constants.HF_HUB_CACHE)
    for role in ("clap", "audio_encoder"):
        repo = cache / ("models--" + PAPER_MODELS[role].model_id.replace("/", "--"))
        commit = "0123456789abcdef0123456789abcdef01234567"
        (repo / "refs").mkdir(parents=True)
        (repo / "refs" / "main").write_text(commit)
        shutil.copytree(tiny[role], repo / "snapshots" / commit)
    paths = resolve_models("paper")
    assert paths["lm"] == no_paper_sources / "models" / "paper" / "lm"
    assert paths["clap"].parent.name == "snapshots" and "clap-htsat-fused" in str(paths["clap"])
    load_clap(paths["clap"])
    load_audio_encoder(paths["audio_encoder"])


def test_env_variable_pointing_at_a_bad_folder_is_an_error(no_paper_sources, tmp_path, monkeypatch):
    monkeypatch.setenv("ITH_MODEL_CLAP", str(tmp_path / "nowhere"))
    with pytest.raises(ModelNotAvailableError, match="ITH_MODEL_CLAP.*nowhere"):
        resolve_models("paper")


def test_missing_or_empty_tokenizer_is_an_error_not_an_empty_tokenizer(tiny, tmp_path):
    no_tokenizer = tmp_path / "no_tokenizer"
    shutil.copytree(tiny["lm"], no_tokenizer, ignore=shutil.ignore_patterns("tokenizer*"))
    with pytest.raises(ModelNotAvailableError, match=f"{re.escape(str(no_tokenizer))}.*tokenizer"):
        load_lm(no_tokenizer)

    # A vocabulary holding only the special tokens loads, silently, as an empty tokenizer.
    only_specials = tmp_path / "only_specials"
    shutil.copytree(tiny["lm"], only_specials, ignore=shutil.ignore_patterns("tokenizer*"))
    (only_specials / "vocab.txt").write_text("\n".join(tiny_models.BERT_SPECIAL_TOKENS) + "\n")
    with pytest.raises(ModelNotAvailableError, match=f"tokenizer in {re.escape(str(only_specials))} is empty"):
        load_span_base(only_specials)

    pipeline = tmp_path / "pipeline"
    shutil.copytree(tiny["generator"], pipeline)
    (pipeline / "tokenizer" / "tokenizer.json").unlink()
    with pytest.raises(ModelNotAvailableError, match="tokenizer"):
        load_generator(pipeline)
