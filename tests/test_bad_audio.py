"""Generated audio that is NaN, infinite or silent is an error naming the clips and the likely cause,
never scored or stored (issue 16 item 4): injected into one clip of a real shard on the tiny profile."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers.imagine_run import assert_store_consistent, tiny_config, write_spans

from ith_core.imagination.generators import GeneratedAudioError, GenerationSettings, audio_fault, check_generated
from ith_core.imagination.tone_generator import ToneGenerator
from ith_core.stages import imagine as stage
from storage import run_files
from storage.audio_store import AudioStore
from storage.layout import RunLayout
from tasks.runtime import is_transient


@pytest.fixture(scope="module")
def model_paths(tiny_models) -> dict[str, str]:
    return {role: str(path) for role, path in tiny_models.items()}


def _settings(dtype: str) -> GenerationSettings:
    return GenerationSettings("gen-x", "Low quality", 3, 1.0, 2, 7.0, 42, dtype, "exact")


def test_audio_faults_are_judged_on_the_16_bit_samples_a_file_would_hold():
    audible = np.full((2, 100), 1e-4, dtype=np.float32)  # 3 steps of 16 bits
    assert audio_fault(audible) is None
    assert audio_fault(audible * 0.1) == "silent"  # nonzero floats, but every stored sample is 0
    assert audio_fault(np.zeros((2, 100), dtype=np.float32)) == "silent"
    for value, kind in ((np.nan, "NaN"), (np.inf, "inf"), (-np.inf, "inf")):
        wave = audible.copy()
        wave[1, 50] = value
        assert audio_fault(wave) == kind


def test_the_cause_follows_the_dtype():
    waves = np.stack([np.full((2, 100), 0.5), np.full((2, 100), np.nan)]).astype(np.float32)
    clips = [("id-good", 0, "dog sound"), ("id-bad", 3, "cat sound")]
    with pytest.raises(GeneratedAudioError) as caught:
        check_generated(waves, clips, _settings("float16"))
    message = str(caught.value)
    assert caught.value.audio_ids == ["id-bad"] and "id-good" not in message
    assert "id-bad candidate 3 ('cat sound'): NaN" in message and "gen-x (float16)" in message
    assert "fp16 overflow" in message and "--set imagine.dtype=float32" in message
    with pytest.raises(GeneratedAudioError, match="broken or random"):
        check_generated(waves, clips, _settings("float32"))
    check_generated(waves[:1], clips[:1], _settings("float16"))  # good audio passes


def test_tone_generator_output_is_never_flagged():
    class Settings:
        duration_s = 0.5
        generator_id = "tone-test"

    gen = ToneGenerator({"kelomit": 440.0}, Settings(), "tone-test")
    # A prompt naming no source is noise alone, at the lowest gain and SNR and 8 bits at worst.
    waves = gen.generate(["kelomit sound", "a sound"], [list(range(20)), list(range(20, 40))]).numpy()
    assert [audio_fault(w) for w in waves.reshape(-1, *waves.shape[-2:])] == [None] * 40


def _break_one_clip(kind: str, real_load):
    """`load_models` whose generator returns `kind` audio for the second clip of each call."""

    def load_models(*args):
        generator, scorer = real_load(*args)
        generate = generator.generate

        def broken(prompts, seeds):
            waves = generate(prompts, seeds).clone()
            if kind == "silent":
                waves[1] *= 1e-6  # below half a 16-bit step: the file would hold zeros
            else:
                waves[1, 0, 0, 7] = float("nan") if kind == "NaN" else float("inf")
            return waves

        generator.generate = broken
        return generator, scorer

    return load_models


@pytest.mark.parametrize("kind", ["NaN", "inf", "silent"])
def test_bad_audio_of_one_clip_fails_the_shard_writing_nothing_and_a_good_rerun_completes_it(
    kind, tmp_path, model_paths, monkeypatch
):
    root = str(tmp_path)
    write_spans(root, "bad")
    cfg = tiny_config(root, "bad")
    plan = stage.plan_imagine(cfg, model_paths)
    shard = plan["shards"][0]
    layout = RunLayout(root, "bad")
    rows = [r for r in layout.read_table(*run_files.PLAN_SHARDS).to_pylist() if r["shard"] == shard]
    real_load = stage.load_models
    monkeypatch.setattr(stage, "load_models", _break_one_clip(kind, real_load))
    with pytest.raises(GeneratedAudioError) as caught:
        stage.generate_candidates(cfg, model_paths, shard, "cpu")
    bad = rows[1]  # the second clip of the first call (candidate 0 of the shard's first prompts)
    message = str(caught.value)
    assert caught.value.audio_ids == [bad["audio_id"]]
    assert f"{bad['audio_id']} candidate 0 ({bad['prompt']!r}): {kind}" in message
    assert plan["settings"]["generator_id"] in message and "(float32)" in message
    assert "broken or random (untrained) checkpoint" in message
    assert rows[0]["audio_id"] not in message
    assert not is_transient(caught.value)  # deterministic: the shard's retry policy does not retry it
    store = AudioStore(root)
    assert not store.has_shard(shard) and store.manifests() == []
    assert not [p for p in (Path(root) / "_imagine").rglob("*") if p.is_file()]

    monkeypatch.setattr(stage, "load_models", real_load)
    assert stage.generate_candidates(cfg, model_paths, shard, "cpu")["status"] == "done"
    assert store.has_shard(shard)
    assert_store_consistent(root)
