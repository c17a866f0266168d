"""Span detection: label construction on tricky spans, span merging, and a detector that learns."""

from __future__ import annotations

import pytest

from ith_core.config import SpanDetectorConfig
from ith_core.models import profiles
from ith_core.models.span_detector import (
    IGNORE_INDEX,
    build_token_labels,
    detect_spans,
    evaluate_span_detector,
    labels_to_spans,
    train_span_detector,
)


@pytest.fixture(scope="module")
def tokenizer(tiny_models):
    return profiles.load_span_base(tiny_models["lm"])[1]


def labelled_text(sentence, spans, tokenizer, max_length=128):
    encoding, labels, found = build_token_labels(sentence, spans, tokenizer, max_length)
    found_spans = [text for _, _, text, _ in labels_to_spans(sentence, labels, encoding["offset_mapping"])]
    return found_spans, labels, found


def test_labels_cover_span_with_inner_punctuation(tokenizer):
    sentence = "A [MASK] makes a sound like a continuous, high-pitched whine."
    spans, labels, found = labelled_text(sentence, ["continuous, high-pitched whine"], tokenizer)
    assert found == [True]
    assert spans == ["continuous, high-pitched whine"]
    assert labels[0] == IGNORE_INDEX and labels[-1] == IGNORE_INDEX  # [CLS] and [SEP]


def test_trailing_punctuation_of_span_is_ignored(tokenizer):
    spans, _, found = labelled_text("It gives a low growl, then barks.", ["low growl."], tokenizer)
    assert found == [True]
    assert spans == ["low growl"]


def test_repeated_words_label_first_occurrence_only(tokenizer):
    sentence = "The bark of a [MASK] is a bark."
    spans, labels, found = labelled_text(sentence, ["bark"], tokenizer)
    assert found == [True]
    assert sum(1 for label in labels if label == 1) == len(tokenizer("bark", add_special_tokens=False)["input_ids"])
    assert len(spans) == 1
    start = sentence.index("bark")
    encoding, labels, _ = build_token_labels(sentence, ["bark"], tokenizer, 128)
    ((char_start, char_end, _, _),) = labels_to_spans(sentence, labels, encoding["offset_mapping"])
    assert (char_start, char_end) == (start, start + 4)


def test_span_not_found_gets_no_label_and_is_counted(tokenizer):
    spans, labels, found = labelled_text("A [MASK] makes a chirping sound.", ["meowing loudly"], tokenizer)
    assert found == [False]
    assert spans == []
    assert all(label in (0, IGNORE_INDEX) for label in labels)


def test_case_is_ignored_by_uncased_tokenizer(tokenizer):
    spans, _, found = labelled_text("Whining is the sound a [MASK] makes.", ["whining"], tokenizer)
    assert found == [True]
    assert spans == ["Whining"]  # the sentence's own characters and casing come back


def test_two_spans_give_two_runs(tokenizer):
    sentence = "The sound of a violin is [MASK] than the sound of a tuba."
    spans, _, found = labelled_text(sentence, ["violin", "tuba"], tokenizer)
    assert found == [True, True]
    assert spans == ["violin", "tuba"]


def test_span_beyond_truncation_is_not_found(tokenizer):
    sentence = "word " * 40 + "a distant siren"
    _, _, found = labelled_text(sentence, ["distant siren"], tokenizer, max_length=16)
    assert found == [False]


def test_wordpieces_of_a_run_are_rejoined(tokenizer):
    sentence = "A [MASK] makes a chirruping sound."
    encoding = tokenizer(sentence, return_offsets_mapping=True)
    pieces = tokenizer.convert_ids_to_tokens(encoding["input_ids"])
    start = next(
        i for i, piece in enumerate(pieces) if sentence[encoding["offset_mapping"][i][0] :].startswith("chirr")
    )
    end = start
    while pieces[end + 1].startswith("##"):
        end += 1
    assert end > start, f"expected 'chirruping' to be split into wordpieces, got {pieces}"
    labels = [0] * len(pieces)
    labels[start : end + 1] = [1] * (end + 1 - start)
    assert [t for _, _, t, _ in labels_to_spans(sentence, labels, encoding["offset_mapping"])] == ["chirruping"]


def test_runs_separated_by_outside_tokens_stay_apart_and_specials_end_runs():
    sentence = "ab cd ef"
    offsets = [(0, 0), (0, 2), (3, 5), (6, 8), (0, 0)]
    assert [t for *_, t, _ in labels_to_spans(sentence, [1, 1, 0, 1, 1], offsets)] == ["ab", "ef"]
    assert [t for *_, t, _ in labels_to_spans(sentence, [IGNORE_INDEX, 1, 1, 1, IGNORE_INDEX], offsets)] == ["ab cd ef"]
    scored = labels_to_spans(sentence, [0, 1, 1, 0, 0], offsets, scores=[0, 0.6, 0.8, 0, 0])
    assert scored[0][:3] == (0, 5, "ab cd") and scored[0][3] == pytest.approx(0.7)


def _rows(bench_examples, task_split):
    return [r for r in bench_examples if r["split"] in task_split]


@pytest.fixture(scope="module")
def bench_rows(bench_dir):
    from ith_core.data import auditorybench

    table = auditorybench.ingest(str(bench_dir), splits=("train", "dev")).examples
    return table.select(["example_id", "split", "sentence", "spans"]).to_pylist()


def test_span_detector_learns(tiny_models, bench_rows):
    """Fine-tuning the tiny detector must lift dev span F1 far above the untrained model's."""
    model, tokenizer = profiles.load_span_base(tiny_models["lm"])
    cfg = SpanDetectorConfig(epochs=2, learning_rate=1e-3, max_train_examples=3000, seed=0)
    train = [r for r in bench_rows if r["split"] == "train"]
    dev = [r for r in bench_rows if r["split"] == "dev"]
    before = evaluate_span_detector(model, tokenizer, dev, cfg, "cpu")
    report = train_span_detector(model, tokenizer, train, cfg, "cpu")
    after = evaluate_span_detector(model, tokenizer, dev, cfg, "cpu")
    print(
        f"dev span F1 {before['span_f1']:.3f} -> {after['span_f1']:.3f}; "
        f"token F1 {before['token_f1']:.3f} -> {after['token_f1']:.3f}; steps {report['steps']}"
    )
    assert report["epoch_mean_loss"][-1] < report["epoch_mean_loss"][0]
    assert before["span_f1"] < 0.15
    assert after["span_f1"] > 0.5
    assert after["span_f1"] > before["span_f1"] + 0.35
    assert after["labels"]["spans_not_found"] < 0.1 * after["labels"]["spans_total"]

    detected = detect_spans(model, tokenizer, dev[:32], cfg, "cpu")
    assert detected, "a trained detector finds spans in dev sentences"
    by_id = {r["example_id"]: r["sentence"] for r in dev[:32]}
    for record in detected:
        assert by_id[record.example_id][record.char_start : record.char_end] == record.span_text
        assert 0.0 <= record.score <= 1.0


def test_span_detector_logs_dev_f1_after_every_epoch_without_changing_training(tiny_models, bench_rows, caplog):
    import logging

    import torch

    cfg = SpanDetectorConfig(epochs=2, learning_rate=1e-3, max_train_examples=200, seed=0)
    train = [r for r in bench_rows if r["split"] == "train"]
    dev = [r for r in bench_rows if r["split"] == "dev"][:100]
    torch.manual_seed(0)  # the token-classification head is initialised when loaded
    plain_model, tokenizer = profiles.load_span_base(tiny_models["lm"])
    plain = train_span_detector(plain_model, tokenizer, train, cfg, "cpu")
    torch.manual_seed(0)
    model, tokenizer = profiles.load_span_base(tiny_models["lm"])
    # Only this run's lines: where an earlier test left the logger at INFO, caplog has the plain run's too.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ith_core.models.span_detector"):
        report = train_span_detector(model, tokenizer, train, cfg, "cpu", dev_rows=dev)
    assert "epoch_dev_span_f1" not in plain and len(report["epoch_dev_span_f1"]) == report["epochs_run"] == 2
    assert report["epoch_mean_loss"] == plain["epoch_mean_loss"]  # evaluating between epochs changes nothing
    assert report["epoch_dev_span_f1"][-1] == evaluate_span_detector(model, tokenizer, dev, cfg, "cpu")["span_f1"]
    # The last epoch's whole evaluation is the trained model's: the stage reports it without a second pass.
    assert report["dev_metrics"] == evaluate_span_detector(model, tokenizer, dev, cfg, "cpu")
    lines = [r.getMessage() for r in caplog.records if "span detector epoch" in r.getMessage()]
    assert [line.split(":")[0] for line in lines] == ["span detector epoch 1/2", "span detector epoch 2/2"]
    for line, f1 in zip(lines, report["epoch_dev_span_f1"]):
        assert f"dev span F1 {f1:.3f}" in line


def test_span_stage_evaluates_dev_once_per_epoch_and_once_untrained(tmp_path, tiny_models, bench_dir, monkeypatch):
    """Regression (found by `ith rehearse`): the stage evaluated the trained detector on dev again after
    the last epoch had, one more pass over the whole dev split (minutes at paper size on a CPU)."""
    from ith_core.config import RunConfig
    from ith_core.models import span_detector as detector_module
    from ith_core.stages import ingest as ingest_stage
    from ith_core.stages import skeleton
    from ith_core.stages import spans as spans_stage

    cfg = RunConfig.for_profile(
        "tiny",
        run_root=str(tmp_path),
        run_id="span-evals",
        device="cpu",
        data={"data_dir": str(bench_dir), "splits": ["train", "dev"], "sample_limit": 8},
        span={"epochs": 2, "max_train_examples": 64, "max_eval_examples": 40},
    )
    skeleton.write_config(cfg)
    ingest_stage.ingest_auditorybench(cfg)
    calls = []
    real = detector_module.evaluate_span_detector

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(detector_module, "evaluate_span_detector", counted)
    monkeypatch.setattr(spans_stage, "evaluate_span_detector", counted)
    report = spans_stage.train_span_detector(cfg, {role: str(p) for role, p in tiny_models.items()})
    assert len(calls) == 1 + 2  # untrained, then after each epoch; the last one is the trained model's
    assert report["dev_span_f1"] == round(report["dev_span_f1_per_epoch"][-1], 4)
    assert report["dev_examples"] == 40  # span.max_eval_examples, the rehearsal's size knob for dev evaluation
