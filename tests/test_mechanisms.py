"""The paper's two mechanisms on the planted-signal benchmark: retrieval that misses (pool
coverage) and CLAP rejection sampling that matters (imperfect imagination, planted scorer).

Fast tests check each piece (the settings change nothing at their defaults; errors are drawn
from the candidate's seed; the planted scorer tells right bands from wrong ones from the audio
alone; coverage keeps nested shares of names). The end-to-end test runs `ith run --benchmark
synthetic` on a small benchmark with an error rate of 0.5, 5 candidates and the planted scorer,
and follows the selection into what the trained model heard: it fails if the pipeline fused
candidate 0 (or any candidate other than the first that passed) instead of the selected one.
The sweeps themselves are benchmarks/bench_mechanisms.py's (docs/synthetic-benchmark.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers.ith_process import run_ith_json

from ith_core.config import ConfigError, RunConfig, SyntheticConfig
from ith_core.data import synthetic
from ith_core.imagination.planted_scorer import PlantedScorer
from ith_core.imagination.tone_generator import ToneGenerator
from ith_core.retrieval.synthetic_pool import _synthetic_sources, covered_names

# The default synthetic run's id, recorded in benchmarks/results/synthetic_default_seed42.json.
DEFAULT_RUN_ID = "tiny-synthetic-46d3a8d6d804"


@dataclass(frozen=True)
class _Settings:
    duration_s: float = 1.0
    generator_id: str = "tone-test"


def test_new_settings_at_their_defaults_change_nothing():
    default = RunConfig.for_profile("tiny", benchmark="synthetic")
    recorded = json.loads((Path(__file__).parents[1] / "benchmarks/results/synthetic_default_seed42.json").read_text())
    assert default.effective_run_id == recorded["run_id"] == DEFAULT_RUN_ID
    explicit = RunConfig.for_profile(
        "tiny", benchmark="synthetic", synthetic={"pool_coverage": 1.0, "tone_error_rate": 0.0, "scorer": "clap"}
    )
    assert explicit.effective_run_id == DEFAULT_RUN_ID
    assert synthetic.settings_hash(SyntheticConfig(pool_coverage=0.5, scorer="planted")) == synthetic.settings_hash(
        SyntheticConfig()
    )
    # Each one set is another run; the error rate is another benchmark folder (its tone table), the pool's rows stay.
    ids = {
        RunConfig.for_profile("tiny", benchmark="synthetic", synthetic=s).effective_run_id
        for s in ({"pool_coverage": 0.5}, {"tone_error_rate": 0.5}, {"scorer": "planted"})
    }
    assert len(ids) == 3 and DEFAULT_RUN_ID not in ids
    errs = SyntheticConfig(tone_error_rate=0.5)
    assert synthetic.settings_hash(errs) != synthetic.settings_hash(SyntheticConfig())
    assert synthetic.rows_hash(errs) == synthetic.settings_hash(SyntheticConfig())
    files, errfiles = synthetic.build(SyntheticConfig()), synthetic.build(errs)
    assert {k: v for k, v in files.items() if k.endswith(".csv")} == {
        k: v for k, v in errfiles.items() if k.endswith(".csv")
    }
    assert "error_rate" not in json.loads(files["tone_generator/tone_generator.json"])


def test_planted_scorer_is_for_the_synthetic_tone_benchmark_only():
    with pytest.raises(ConfigError, match="synthetic.scorer=planted"):
        RunConfig.for_profile("tiny", synthetic={"scorer": "planted"})
    with pytest.raises(ConfigError, match="query_mode"):
        RunConfig.for_profile(
            "tiny", benchmark="synthetic", synthetic={"scorer": "planted"}, audiobert={"query_mode": "clap"}
        )


def test_errors_come_from_the_candidate_seed_and_leave_right_candidates_as_they_were():
    tones = {"kelomit": 440.0, "badotun": 3000.0, "whistle": 1000.0}
    wrong = {"kelomit": [[1430.0, 4000.0]], "badotun": [[250.0, 700.0]]}
    exact = ToneGenerator(tones, _Settings(), "t")
    erring = ToneGenerator(tones, _Settings(), "t", error_rate=0.5, wrong_bands_hz=wrong)
    seeds = list(range(400))
    flags = [erring.renders_wrong_band(s) for s in seeds]
    assert 0.42 < np.mean(flags) < 0.58
    # The draw is the seed's alone: the same for every prompt (independent of the source and its answer).
    a = erring.generate(["kelomit call sound"], [seeds[:8]]).numpy()[0]
    b = erring.generate(["badotun sound"], [seeds[:8]]).numpy()[0]
    base = exact.generate(["kelomit call sound"], [seeds[:8]]).numpy()[0]
    scorer = PlantedScorer(tones)
    for k, seed in enumerate(seeds[:8]):
        assert np.array_equal(a[k], base[k]) != flags[k]
        for wave, name in ((a[k], "kelomit"), (b[k], "badotun")):
            spectrum = np.abs(np.fft.rfft(wave.mean(axis=0)))
            peak = np.fft.rfftfreq(wave.shape[-1], 1 / 44100)[spectrum[50:].argmax() + 50]
            low, high = wrong[name][0] if flags[k] else (tones[name] * 0.96, tones[name] * 1.04)
            assert low * 0.96 < peak < high * 1.04, (name, seed, peak)
    # The anchor has no wrong band: it is rendered right even by an erring candidate.
    assert erring.candidate_tones("whistle sound", seeds[flags.index(True)]) == [1000.0]
    # The planted scorer tells right from wrong from the audio alone; a text naming no source scores 0.
    scores = scorer.score(a[None], 44100, ["kelomit call"])[0]
    assert all((s > 0.9) if not f else (s < 0.3) for s, f in zip(scores, flags[:8])), (scores, flags[:8])
    shuffled = scorer.score(a[None, ::-1], 44100, ["kelomit call"])[0]
    assert np.allclose(shuffled, scores[::-1])
    assert not scorer.score(a[None], 44100, ["sound"]).any()


def test_pool_coverage_keeps_a_nested_share_of_each_split(tmp_path, monkeypatch):
    monkeypatch.setenv("ITH_HOME", str(tmp_path))
    sources = _synthetic_sources(synthetic.ensure_benchmark(SyntheticConfig()))
    full = covered_names(sources, 1.0, "k")
    half = covered_names(sources, 0.5, "k")
    none = covered_names(sources, 0.0, "k")
    assert none == {synthetic.ANCHOR} and none < half < full == {s[0] for s in sources}
    for task in ("animal", "pitch"):
        for split in ("train", "dev", "test", "wiki"):
            names = {s[0] for s in sources if s[2] == split and s[3] == task}
            assert len(names & half) == round(0.5 * len(names))


@pytest.mark.slow
def test_rejection_sampling_selects_right_bands_and_the_selection_reaches_training(tmp_path, ith_home):
    """q = 0.5, 5 candidates, planted scorer at 0.5: the first right-band candidate is selected, and it
    (not candidate 0) is what the trained ITH model hears when it is scored."""
    sizes = {"train": 16, "dev": 8, "test": 8, "wiki": 4}
    settings = {
        "synthetic.names": sizes,
        "synthetic.tone_error_rate": 0.5,
        "synthetic.scorer": "planted",
        "imagine.thresholds": {"animal": 0.5, "pitch": 0.5},
        "span.source": "gold",
        "fusion.epochs": 4,
    }
    sets = [x for k, v in settings.items() for x in ("--set", f"{k}={json.dumps(v)}")]
    result = run_ith_json(
        ["run", "--benchmark", "synthetic", "--systems", "ith", "--run-root", str(tmp_path / "runs"), *sets],
        tmp_path,
        ith_home,
    )
    run = Path(result["run_dir"])
    cfg = SyntheticConfig(names=sizes, tone_error_rate=0.5, scorer="planted")
    generator = ToneGenerator.from_folder(synthetic.benchmark_dir(cfg) / "tone_generator", _Settings())
    candidates = pq.read_table(run / "imagine" / "candidates.parquet").to_pylist()
    sourced = [c for c in candidates if any(n in generator.wrong_bands_hz for n in generator.source_names(c["prompt"]))]
    assert sourced
    # Accepted exactly when the candidate rendered the right band; about 1 - q of them.
    for c in sourced:
        assert (c["clap_score"] >= 0.5) == (not generator.renders_wrong_band(c["seed"])), c
    acceptance = np.mean([c["clap_score"] >= 0.5 for c in sourced])
    assert 0.3 < acceptance < 0.7, acceptance
    # Each occurrence selects its first right-band candidate, often not candidate 0.
    by_id: dict[str, dict[int, dict]] = {}
    for c in candidates:
        by_id.setdefault(c["audio_id"], {})[c["candidate"]] = c
    selection = pq.read_table(run / "imagine" / "selection.parquet").to_pylist()
    chosen = [s for s in selection if s["accepted"]]
    for s in chosen:
        first = min(k for k, c in by_id[s["audio_id"]].items() if c["clap_score"] >= 0.5)
        assert s["candidate"] == first and not generator.renders_wrong_band(by_id[s["audio_id"]][first]["seed"])
    assert np.mean([s["candidate"] > 0 for s in chosen]) > 0.2
    # What the trained model heard when scored is the selected candidate of each span, nothing else.
    heard = {}
    for s in chosen:
        heard.setdefault(s["example_id"], set()).add(f"{s['audio_id']}-c{s['candidate']}")
    predictions = [p for p in pq.read_table(run / "fusion" / "predictions.parquet").to_pylist() if p["model"] == "ith"]
    assert predictions
    for p in predictions:
        assert set(p["audio_ids"] or []) == heard.get(p["example_id"], set()), p["example_id"]


def test_the_report_states_coverage_error_rate_and_scorer():
    from ith_core.report.summaries import synthetic_mechanisms

    default = synthetic_mechanisms(RunConfig.for_profile("tiny", benchmark="synthetic").resolved())
    assert "pool_coverage 1.0" in default and "exact-name lookup" in default and "wrong band" not in default
    cfg = RunConfig.for_profile(
        "tiny", benchmark="synthetic", synthetic={"pool_coverage": 0.5, "tone_error_rate": 0.5, "scorer": "planted"}
    )
    text = synthetic_mechanisms(cfg.resolved())
    assert "50% of each split's source names" in text and "probability 0.5" in text and "not CLAP" in text
