"""`ith run --benchmark glue`: GLUE's six tasks through every production stage on the tiny profile.

The end-to-end test runs the command a user runs on a small GLUE-format folder the test writes
(tests/helpers/glue_folder.py: every task's own layout) and reads what the run wrote: ingestion
counts, spans detected over both sentences of a pair, imagined audio fused into ITH's spans and
never into BERT's, GLUE's metrics per task for both systems with intervals and the paired
difference, the report's GLUE section, and a rerun that fine-tunes nothing again. The unit tests
check the piece the release got wrong: where a span of either sentence sits in the pair's tokens.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from helpers.glue_folder import append_bad_rows, write_glue_folder
from helpers.ith_process import run_ith, run_ith_json

from ith_core.config import GLUE_DEFAULT_TASKS
from ith_core.data.glue import PAIR_SEPARATOR, join_pair
from ith_core.evaluation.glue_metrics import METRICS
from ith_core.fusion.glue_training import span_positions

DEV_ROWS = 16


@pytest.fixture(scope="module")
def glue_run(tmp_path_factory, ith_home):
    tmp = tmp_path_factory.mktemp("glue_run")
    folder = write_glue_folder(tmp / "glue", rows=DEV_ROWS)
    bad = append_bad_rows(folder, "sst2", "train")
    args = ["run", "--benchmark", "glue", "--data-dir", str(folder), "--run-root", str(tmp / "runs")]
    first = run_ith_json(args, tmp, ith_home)
    again = run_ith_json(args, tmp, ith_home)
    return first, again, bad, Path(first["run_dir"])


@pytest.mark.slow
def test_glue_runs_every_task_with_ith_and_bert(glue_run):
    first, again, bad, run = glue_run
    config = json.loads((run / "config.json").read_text())
    assert config["benchmark"] == "glue" and tuple(config["data"]["tasks"]) == GLUE_DEFAULT_TASKS
    assert config["systems"] == ["bert", "ith"]
    ingest = first["stages"]["ingest"]
    # Rows in = accepted + rejected; the malformed SST-2 rows are kept with their reasons.
    assert ingest["rows_in"] == ingest["accepted"] + ingest["rejected"]
    assert ingest["rejected"] == sum(bad.values()) > 0
    rejects = pq.read_table(run / "ingest" / "rejects.parquet").to_pylist()
    assert {r["reason"] for r in rejects} == {r for r, n in bad.items() if n}
    # Spans were detected on GLUE's sentences, and the second sentence of pairs has some.
    spans = [
        row
        for path in sorted((run / "spans").glob("*.parquet"))
        if not path.name.endswith(".examples.parquet")
        for row in pq.read_table(path).to_pylist()
    ]
    examples = {r["example_id"]: r for r in pq.read_table(run / "ingest" / "examples.parquet").to_pylist()}
    assert spans
    second = [
        s
        for s in spans
        if PAIR_SEPARATOR in examples[s["example_id"]]["sentence"]
        and s["char_start"] > examples[s["example_id"]]["sentence"].index(PAIR_SEPARATOR)
    ]
    assert second, "no span found in the second sentence of any pair"

    results = json.loads((run / "glue" / "results.json").read_text())
    assert set(results["tasks"]) == set(GLUE_DEFAULT_TASKS)
    plan = json.loads((run / "imagine" / "plan.json").read_text())
    assert results["generator"] == {"name": "stable-audio", "id": plan["settings"]["generator_id"], "imagined": True}
    predictions = pq.read_table(run / "glue" / "predictions.parquet").to_pylist()
    for task, entry in results["tasks"].items():
        assert entry["metrics"] == list(METRICS[task])
        for system in ("bert", "ith"):
            scored = entry["systems"][system]
            assert scored["rows"] == DEV_ROWS
            for metric in METRICS[task]:
                cell = scored[metric]
                assert cell["low"] <= cell["value"] <= cell["high"]
        assert entry["paired"]["rows"] == DEV_ROWS and set(METRICS[task]) <= set(entry["paired"])
        rows = [p for p in predictions if p["task"] == task]
        assert len(rows) == 2 * DEV_ROWS
        # BERT never hears audio; ITH hears imagined clips in some rows of every task.
        assert all(p["spans_fused"] == 0 for p in rows if p["system"] == "bert")
        assert any(p["spans_fused"] > 0 for p in rows if p["system"] == "ith")
        if task == "stsb":
            assert all(0.0 <= p["label"] <= 5.0 for p in rows)
        else:
            assert {p["prediction"] for p in rows} <= {float(i) for i in range(3)}

    report = (run / "report" / "report.md").read_text()
    assert "## GLUE" in report and "ITH - BERT" in report and "STS-B" in report and "MNLI-m" in report
    assert "nothing about GLUE or the method" in report  # the tiny profile says what its numbers mean
    # The rerun fine-tunes nothing again and gives the same table.
    assert all(job["cached"] for job in again["stages"]["glue"]["jobs"])
    assert again["stages"]["glue"]["results"]["results"] == first["stages"]["glue"]["results"]["results"]


def test_glue_refuses_other_systems_and_unknown_tasks(tmp_path, ith_home):
    folder = write_glue_folder(tmp_path / "glue", tasks=("sst2",), rows=4)
    base = ["config", "--benchmark", "glue", "--data-dir", str(folder)]
    done = run_ith([*base, "--systems", "bert,audiobert"], tmp_path, ith_home, timeout=120)
    assert done.returncode != 0 and "systems must be bert and/or ith with --benchmark glue" in done.stderr
    done = run_ith([*base, "--tasks", "sst3"], tmp_path, ith_home, timeout=120)
    assert done.returncode != 0 and "sst3" in done.stderr
    done = run_ith(["config", "--tasks", "sst2"], tmp_path, ith_home, timeout=120)
    assert done.returncode != 0 and "is a GLUE task: add --benchmark glue" in done.stderr


def _tokens(text: str) -> tuple[list[tuple[int, int]], list[str]]:
    offsets, words, at = [], [], 0
    for word in text.split(" "):
        offsets.append((at, at + len(word)))
        words.append(word)
        at += len(word) + 1
    return offsets, words


def test_span_positions_find_spans_in_either_sentence():
    s1, s2 = "a dog barks", "the dog sleeps"
    o1, _ = _tokens(s1)
    o2, _ = _tokens(s2)
    # [CLS] s1 [SEP] s2 [SEP], offsets within each sentence, as a fast tokenizer gives them.
    offsets = [(0, 0), *o1, (0, 0), *o2, (0, 0)]
    sequence_ids = [None, 0, 0, 0, None, 1, 1, 1, None]
    joined = join_pair(s1, s2)
    first = joined.index("dog")
    second = joined.index("dog", first + 1)
    assert span_positions(offsets, sequence_ids, len(s1), first, first + 3) == [2]
    # The same word in the second sentence is its own span: the release's str.index found the first.
    assert span_positions(offsets, sequence_ids, len(s1), second, second + 3) == [6]
    start = joined.index("dog sleeps")
    assert span_positions(offsets, sequence_ids, len(s1), start, start + len("dog sleeps")) == [6, 7]
    # Special tokens are never part of a span, even where their (0, 0) offsets fall inside it.
    assert span_positions(offsets, sequence_ids, len(s1), 0, 1) == [1]


def test_the_glue_deployment_is_the_paper_recipe(tmp_path):
    """prefect.yaml's `ith/glue`: the full pipeline's flow with benchmark glue on the paper profile, which
    resolves to the release's recipe (six tasks, BERT and ITH, CLAP 0.3, 3 epochs at lr 2e-5, batch 32)."""
    import yaml

    from flows.pipeline import build_config

    deployments = {d["name"]: d for d in yaml.safe_load(Path("prefect.yaml").read_text())["deployments"]}
    glue = deployments["glue"]
    assert glue["entrypoint"] == deployments["full-pipeline"]["entrypoint"]
    params = {**glue["parameters"], "run_root": str(tmp_path)}
    folder = write_glue_folder(tmp_path / "glue", rows=4)
    cfg = build_config(**params, data_dir=str(folder))
    assert cfg.benchmark == "glue" and cfg.profile == "paper" and cfg.systems == ("bert", "ith")
    assert cfg.data.tasks == GLUE_DEFAULT_TASKS and cfg.data.splits == ("train", "dev")
    assert all(cfg.imagine.thresholds[t] == 0.3 for t in GLUE_DEFAULT_TASKS)
    assert (cfg.glue.epochs, cfg.glue.learning_rate, cfg.glue.batch_size) == (3, 2e-5, 32)
    assert cfg.effective_run_id.startswith("paper-glue-") and cfg.data.content.startswith("glue:sha256:")
    # What the GLUE files are enters the run id; where they are does not.
    copy = write_glue_folder(tmp_path / "elsewhere", rows=4)
    assert build_config(**params, data_dir=str(copy)).effective_run_id == cfg.effective_run_id
    other = write_glue_folder(tmp_path / "other", rows=5)
    assert build_config(**params, data_dir=str(other)).effective_run_id != cfg.effective_run_id


@pytest.mark.slow
@pytest.mark.parametrize("num_labels", [3, 1])
def test_paper_size_classifier_fuses_spans_of_a_pair(num_labels):
    """The paper profile's GLUE model: BERT-base (published config, random weights) as a sequence
    classifier under the fusion layer, fed a pair with segment ids and a span in each sentence."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from ith_core.config import FusionConfig
    from ith_core.fusion.model import build_fusion_model
    from ith_core.models.paper_architectures import BERT_BASE_CONFIG

    torch.manual_seed(0)
    config = BertConfig(**BERT_BASE_CONFIG, num_labels=num_labels)
    config.problem_type = "regression" if num_labels == 1 else "single_label_classification"
    model = build_fusion_model(BertForSequenceClassification(config), FusionConfig(), audio_dim=768).eval()
    ids = torch.randint(1000, 30000, (2, 12))
    types = torch.tensor([[0] * 6 + [1] * 6] * 2)
    labels = torch.tensor([2.5, 4.0]) if num_labels == 1 else torch.tensor([0, 2])
    spans = {
        "span_batch": torch.tensor([0, 0, 1]),
        "span_positions": torch.tensor([[2, 3], [8, 0], [4, 0]]),
        "span_position_mask": torch.tensor([[True, True], [True, False], [True, False]]),
        "span_audio": torch.tensor([0, 1, 1]),
        "audio_tokens": torch.randn(2, 5, 768),
        "audio_mask": torch.ones(2, 5, dtype=torch.bool),
    }
    with torch.inference_mode():
        plain = model(ids, torch.ones_like(ids), labels=labels, token_type_ids=types)
        fused = model(ids, torch.ones_like(ids), labels=labels, token_type_ids=types, **spans)
        other_segments = model(ids, torch.ones_like(ids), labels=labels, **spans)
    assert fused.logits.shape == (2, num_labels) and torch.isfinite(fused.loss)
    assert not torch.allclose(plain.logits, fused.logits)  # the audio reached the head
    assert not torch.allclose(fused.logits, other_segments.logits)  # and so did the segment ids


def test_predict_refuses_a_glue_run(tmp_path):
    """`ith predict` answers [MASK] sentences with an AuditoryBench run's models; a GLUE run has none."""
    from ith_core.config import ConfigError, RunConfig
    from ith_core.stages.predict import predict_sentences
    from ith_core.stages.skeleton import write_config

    cfg = RunConfig.for_profile("tiny", benchmark="glue", run_root=str(tmp_path), run_id="glue-run")
    write_config(cfg)
    with pytest.raises(ConfigError, match="is a GLUE run"):
        predict_sentences(str(tmp_path), "glue-run", ["Rattle is the sound a [MASK] makes."])
