"""`ith predict` on a real trained tiny run: stages 1-3 through their drivers (as
tests/helpers/report_fixtures.py runs them, with its tiny imagine settings), then real AST features
and real ITH and text-only training (one epoch). Checks reuse of stored audio (the store's
manifests are the witness: a generation writes exactly one new shard manifest), generation of an
unseen prompt once, the answers of both tasks with and without audio, the batch file form and the
input errors."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers.report_fixtures import TINY_IMAGINE  # noqa: E402

from ith_core.config import RunConfig  # noqa: E402
from ith_core.fusion.answering import PredictInputError, check_sentences, infer_task  # noqa: E402
from ith_core.stages.predict import predict_sentences  # noqa: E402

RUN_ID = "predict-run"
# Its spans are not in the run's sample: the tiny detector finds spans here whose prompts no run made.
UNSEEN = "The zorblax wheezing of the old quixotic bellows is the sound a [MASK] makes."
PITCH = "The hum of a fridge has a [MASK] pitch than the whistle of a kettle."


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_models, bench_dir) -> dict:
    from ith_core.stages import fusion as fusion_stage
    from ith_core.stages import imagine as imagine_stage
    from ith_core.stages import ingest as ingest_stage
    from ith_core.stages import skeleton
    from ith_core.stages import spans as spans_stage

    root = tmp_path_factory.mktemp("predict")
    cfg = RunConfig.for_profile(
        "tiny",
        run_root=str(root),
        run_id=RUN_ID,
        device="cpu",
        data={"data_dir": str(bench_dir), "splits": ["train", "dev"], "sample_limit": 8},
        span={"max_train_steps": 20, "max_train_examples": 256},
        imagine=TINY_IMAGINE,
        fusion={"epochs": 1, "batch_size": 8, "audio_tokens": 4, "seeds": [0]},
    )
    paths = {role: str(p) for role, p in tiny_models.items()}
    skeleton.write_config(cfg)
    ingest_stage.ingest_auditorybench(cfg)
    spans_stage.train_span_detector(cfg, paths)
    spans_stage.detect_spans(cfg, paths)
    plan = imagine_stage.plan_imagine(cfg, paths)
    imagine_stage.record_shard_status(
        cfg, [imagine_stage.generate_candidates(cfg, paths, n, "cpu") for n in plan["shards"]]
    )
    imagine_stage.select_candidates(cfg)
    fusion_stage.prepare_examples(cfg)
    fusion_stage.encode_audio(cfg, paths)
    for system in ("ith", "bert-text"):
        fusion_stage.train_system(cfg, paths, system, 0)
    run_dir = root / RUN_ID
    mapping = pq.read_table(run_dir / "imagine" / "mapping.parquet").to_pylist()
    examples = {r["example_id"]: r for r in pq.read_table(run_dir / "ingest" / "examples.parquet").to_pylist()}
    return {"root": str(root), "cfg": cfg, "paths": paths, "run_dir": run_dir, "mapping": mapping, "examples": examples}


def _manifests(root: str) -> list[str]:
    return sorted(p.name for p in (Path(root) / "_imagine" / "shards").glob("part-*.parquet"))


def _fused_seen_example(run: dict, task: str) -> tuple[str, set[str]]:
    """A sampled sentence of `task` with a fused span in the run, and the audio ids of its spans."""
    selection = pq.read_table(run["run_dir"] / "imagine" / "selection.parquet").to_pylist()
    for row in selection:
        if row["task"] == task and row["accepted"] and row["span_index"] >= 0:
            ids = {m["audio_id"] for m in run["mapping"] if m["example_id"] == row["example_id"]}
            return run["examples"][row["example_id"]]["sentence"], ids
    raise AssertionError(f"the run fused no {task} span")


# -- without a run --------------------------------------------------------------------------------


def test_infer_task():
    assert infer_task("The sound of machinery has a [MASK] pitch than the sound of a market.") == "pitch"
    assert infer_task("Rattle is the sound a [MASK] makes.") == "animal"
    # "than" before the mask is not a comparison about the mask.
    assert infer_task("Louder than a lion, the [MASK] roars.") == "animal"


def test_sentence_without_mask_is_a_clear_error(tmp_path):
    with pytest.raises(PredictInputError, match=r"sentence 2: 'A dog barks\.' has no \[MASK\]"):
        # Raised before anything is loaded: the run does not even exist.
        predict_sentences(str(tmp_path), "no-such-run", ["A [MASK] barks.", "A dog barks."])
    with pytest.raises(PredictInputError, match=r"has 2 \[MASK\] tokens"):
        check_sentences(["A [MASK] chases a [MASK]."])
    from cli.predict_command import add_predict_parser, cmd_predict

    parser = argparse.ArgumentParser(prog="ith")
    add_predict_parser(parser.add_subparsers(dest="command"))
    assert cmd_predict(parser.parse_args(["predict", "no mask here", "--run", "x", "--run-root", str(tmp_path)])) == 2


# -- on the trained run ---------------------------------------------------------------------------


@pytest.mark.slow
def test_seen_prompt_reuses_stored_audio(trained_run):
    sentence, run_ids = _fused_seen_example(trained_run, "animal")
    before = _manifests(trained_run["root"])
    [result] = predict_sentences(trained_run["root"], RUN_ID, [sentence], device="cpu")
    assert _manifests(trained_run["root"]) == before  # nothing generated
    assert result["spans"], "the run's own sentence must get its spans back"
    assert result["imagine"]["generated"] == 0
    for span in result["spans"]:
        assert span["source"] == "reused"
        assert span["audio_id"] in run_ids  # the same prompt, settings and hence id as the imagine stage
        for path in span["candidate_paths"]:
            assert Path(path).is_file()
    fused = [s for s in result["spans"] if s["fused"]]
    assert fused and all(s["clap_score"] >= s["threshold"] and Path(s["audio_path"]).is_file() for s in fused)
    assert result["with_audio"]["spans_fused"] and result["without_audio"]["spans_fused"] == []


@pytest.mark.slow
def test_seen_audio_is_encoded_as_in_training(trained_run):
    """The AST features predict computes for a fused span equal the run's precomputed ones."""
    import torch

    from ith_core.stages import predict
    from ith_core.stages.fusion import FEATURES
    from storage.features import FeatureStore
    from storage.layout import RunLayout

    sentence, _ = _fused_seen_example(trained_run, "pitch")
    [result] = predict_sentences(trained_run["root"], RUN_ID, [sentence], device="cpu")
    spans = [s for s in result["spans"] if s["fused"]]
    layout = RunLayout(trained_run["root"], RUN_ID)
    computed = predict.encode_audio(trained_run["cfg"], layout, trained_run["paths"], spans, "cpu")
    stored = FeatureStore(layout, FEATURES).reader()
    for span in spans:
        assert span["fused_audio_id"] in stored
        assert torch.equal(computed.get(span["fused_audio_id"]), stored.get(span["fused_audio_id"]))


@pytest.mark.slow
def test_unseen_prompt_is_generated_once_then_reused(trained_run):
    root = trained_run["root"]
    run_prompts = {m["prompt"] for m in trained_run["mapping"]}
    before = _manifests(root)
    [first] = predict_sentences(root, RUN_ID, [UNSEEN], device="cpu")
    new = [s for s in first["spans"] if s["prompt"] not in run_prompts]
    assert new, f"the tiny detector found no unseen span in {UNSEEN!r}: {first['spans']}"
    assert {s["source"] for s in new} == {"generated"}
    after = _manifests(root)
    assert len(after) == len(before) + 1 and first["imagine"]["shard"] in {Path(m).stem for m in after}
    shard = pq.read_table(Path(root) / "_imagine" / "shards" / f"{first['imagine']['shard']}.parquet")
    assert set(shard["audio_id"].to_pylist()) == {s["audio_id"] for s in new}
    # Lazy sampling (the default): candidates 0..j of each new prompt, stopping at the first that passes.
    k, threshold = trained_run["cfg"].imagine.num_candidates, max(trained_run["cfg"].imagine.thresholds.values())
    by_id: dict = {}
    for row in shard.to_pylist():
        by_id.setdefault(row["audio_id"], []).append(row)
    for rows in by_id.values():
        rows.sort(key=lambda r: r["candidate"])
        assert [r["candidate"] for r in rows] == list(range(len(rows))) and 1 <= len(rows) <= k
        assert all(r["clap_score"] < threshold for r in rows[:-1])
        assert len(rows) == k or rows[-1]["clap_score"] >= threshold
    # No scratch plan folder is left beside the run.
    assert sorted(p.name for p in Path(root).iterdir()) == ["_imagine", RUN_ID]

    [second] = predict_sentences(root, RUN_ID, [UNSEEN], device="cpu")
    assert _manifests(root) == after
    assert {s["source"] for s in second["spans"]} == {"reused"}
    assert [(s["audio_id"], s["candidate"], s["clap_score"]) for s in second["spans"]] == [
        (s["audio_id"], s["candidate"], s["clap_score"]) for s in first["spans"]
    ]
    assert second["with_audio"]["answers"] == first["with_audio"]["answers"]


@pytest.mark.slow
def test_top_answers_with_and_without_audio_for_both_tasks(trained_run):
    from ith_core.stages.predict import known_animals
    from storage.layout import RunLayout

    animal_sentence, _ = _fused_seen_example(trained_run, "animal")
    results = predict_sentences(trained_run["root"], RUN_ID, [animal_sentence, PITCH], top_k=3, device="cpu")
    animal, pitch = results
    assert (animal["task"], pitch["task"]) == ("animal", "pitch")
    names = set(known_animals(RunLayout(trained_run["root"], RUN_ID)))
    for key, model in (("with_audio", "ith"), ("without_audio", "text")):
        out = animal[key]
        assert out["model"] == model and out["job"] == f"{model}-animal-seed0"
        assert len(out["answers"]) == 3 and {a["answer"] for a in out["answers"]} <= names
        scores = [a["mean_logprob"] for a in out["answers"]]
        assert scores == sorted(scores, reverse=True)
        assert len(out["single_mask"]) == 3
        out = pitch[key]
        assert out["model"] == model and [a["answer"] for a in out["answers"]] in (
            ["higher", "lower"],
            ["lower", "higher"],
        )
        assert abs(sum(a["probability"] for a in out["answers"]) - 1.0) < 1e-4
    # --task overrides the inference.
    [forced] = predict_sentences(trained_run["root"], RUN_ID, [PITCH], task="animal", top_k=2, device="cpu")
    assert forced["task"] == "animal" and not forced["task_inferred"] and len(forced["with_audio"]["answers"]) == 2


@pytest.mark.slow
def test_batch_file_form(trained_run, tmp_path, capsys):
    from cli.predict_command import add_predict_parser, cmd_predict

    parser = argparse.ArgumentParser(prog="ith")
    add_predict_parser(parser.add_subparsers(dest="command"))
    good = tmp_path / "sentences.txt"
    good.write_text(f"# one per line\n{UNSEEN}\n\n{PITCH}\n")
    argv = ["predict", "--file", str(good), "--run", RUN_ID, "--run-root", trained_run["root"], "--device", "cpu"]
    assert cmd_predict(parser.parse_args(argv + ["--json", "--top-k", "2"])) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["where"] for r in results] == [f"{good}:2", f"{good}:4"]
    assert [r["task"] for r in results] == ["animal", "pitch"]
    assert all(len(r[k]["answers"]) == 2 for r in results for k in ("with_audio", "without_audio"))

    assert cmd_predict(parser.parse_args(argv)) == 0
    text = capsys.readouterr().out
    assert "with audio (ITH)" in text and "without audio (text-only)" in text and ".wav" in text

    bad = tmp_path / "bad.txt"
    bad.write_text(f"{PITCH}\n# comment\nA dog barks.\n{UNSEEN}\nA [MASK] chases a [MASK].\n")
    assert (
        cmd_predict(
            parser.parse_args(["predict", "--file", str(bad), "--run", RUN_ID, "--run-root", trained_run["root"]])
        )
        == 2
    )
    err = capsys.readouterr().err
    assert f"{bad}:3: 'A dog barks.' has no [MASK]" in err and f"{bad}:5:" in err and f"{bad}:4" not in err
