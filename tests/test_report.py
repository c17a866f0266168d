"""The run report: a real tiny run (stages 1-3 through their drivers, fusion outputs by contract)
rendered to HTML and Markdown, checked as files and in headless Chromium (Debian's chromium and
chromium-driver, driven by selenium). The browser test keeps a full-page screenshot under
$ITH_TEST_ARTIFACTS (default: the test's tmp dir) and prints its path.

One module, over 600 lines, because every test reads the same rendered run (tests/helpers/report_fixtures.py),
built once per module."""

from __future__ import annotations

import functools
import http.server
import json
import os
import posixpath
import re
import shutil
import sys
import threading
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers.browser import artifact_dir, browser  # noqa: E402
from helpers.report_fixtures import (  # noqa: E402
    HOSTILE_PREDICTION,
    HOSTILE_SENTENCE,
    HOSTILE_SPAN,
    build_coincident_run,
    build_hostile_run,
    build_tiny_run,
    tiny_run_config,
)

from ith_core.report.rendering import write_report  # noqa: E402
from storage.layout import RunLayout  # noqa: E402

TABLES = [
    "table-run",
    "table-stages",
    "table-accuracy",
    "table-accuracy-seeds",
    "table-span-metrics",
    "table-span-counts",
    "table-imagine",
    "table-acceptance",
    "table-clap-quantiles",
    "table-training",
    "table-compute",
]
CHARTS = ["chart-accuracy", "chart-clap", "chart-acceptance", "chart-training"]


class PageIndex(HTMLParser):
    """Ids of elements, audio sources, and whether a chart id holds an <svg>."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.audio: list[str] = []
        self.links: list[str] = []  # every src / href / xlink:href
        self.scripts = 0
        self.charts_with_svg: set[str] = set()
        self._figure: str | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        self.links += [v for k, v in attrs.items() if k in ("src", "href", "xlink:href") and v is not None]
        if tag == "figure":
            self._figure = attrs.get("id")
        if tag == "svg" and self._figure:
            self.charts_with_svg.add(self._figure)
        if tag == "audio":
            self.audio.append(attrs["src"])
        if tag == "script":
            self.scripts += 1

    def handle_endtag(self, tag):
        if tag == "figure":
            self._figure = None


def index(html_path: str) -> PageIndex:
    page = PageIndex()
    page.feed(Path(html_path).read_text(encoding="utf-8"))
    return page


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_models, bench_dir):
    root = str(tmp_path_factory.mktemp("report_runs"))
    started = time.perf_counter()
    model_paths = {k: str(v) for k, v in tiny_models.items()}
    reports = build_tiny_run(root, "tiny-report", model_paths, bench_dir)
    built = time.perf_counter()
    paths = write_report(root, "tiny-report")
    print(f"\nreport test run: stages {built - started:.1f} s, report {time.perf_counter() - built:.1f} s")
    return {"root": root, "reports": reports, "paths": paths, "model_paths": model_paths, "bench_dir": bench_dir}


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("report_hostile"))
    build_hostile_run(root, "hostile")
    return {"root": root, "paths": write_report(root, "hostile")}


@pytest.fixture(scope="module")
def coincident_run(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("report_coincident"))
    build_coincident_run(root, "coincident")
    return {"root": root, "paths": write_report(root, "coincident")}


def table_rows(page: str, table_id: str) -> list[list[str]]:
    """The cells (markup stripped) of each row of the table in `<div id=table_id>`, header row first."""
    block = page[page.index(f'<div id="{table_id}">') :]
    block = block[: block.index("</table>")]
    return [
        [re.sub(r"<[^>]+>", "", cell) for cell in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row)]
        for row in re.findall(r"<tr[^>]*>(.*?)</tr>", block)
    ]


def test_report_has_every_table_chart_and_playable_audio(tiny_run):
    html_path, md_path = tiny_run["paths"]["html"], tiny_run["paths"]["markdown"]
    assert Path(html_path).is_file() and Path(md_path).is_file()
    assert Path(html_path).parent == Path(tiny_run["root"]) / "tiny-report" / "report"
    page = index(html_path)
    assert set(TABLES) <= page.ids, set(TABLES) - page.ids
    assert set(CHARTS) <= page.charts_with_svg, set(CHARTS) - page.charts_with_svg
    assert page.scripts == 0
    text = Path(html_path).read_text(encoding="utf-8")
    # Every stage ran or was written by contract, except the ones the fixture leaves out (each is
    # listed twice: stages of the overview, compute per stage).
    absent = ("fusion_examples", "fusion_features", "audiobert_retrieval", "audiobert_features")
    assert text.count("not run") == 2 * len(absent)
    assert all(text.count(f"<td>{stage}</td><td>not run</td>") == 2 for stage in absent)
    # Self-contained: every link is an in-page fragment, an inline data: URL or a relative audio file.
    assert page.links and all(
        link.startswith(("#", "data:")) or link.startswith("../../_imagine/audio/") for link in page.links
    ), [x for x in page.links if "://" in x][:5]
    assert not re.findall(r"url\((?!#)", text) and "@import" not in text  # only clip-path="url(#...)"
    # The table: every system of the published table, ours beside the published numbers.
    for label in (
        "BERT, zero-shot",
        "BERT, fine-tuned text-only",
        "RoBERTa, zero-shot",
        "RoBERTa, fine-tuned text-only",
        "AudioBERT (retrieved audio)",
        "ITH (imagined audio)",
        "ITH − text-only",
        "ITH − AudioBERT",
    ):
        assert f"<td>{label}</td>" in text, label
    for published in ("41.55", "78.96", "36.63", "74.83", "13.46", "60.41", "14.04", "55.84"):
        assert published in text, published
    assert 'id="table-paired"' in text
    # Like with like: each published row right under the system of the run that reproduces it (the
    # published BERT-base and RoBERTa-base rows are zero-shot), and one name per system everywhere.
    labels = [row[0] for row in table_rows(text, "table-accuracy")]
    for ours, published in (
        ("BERT, zero-shot", "BERT-base"),
        ("RoBERTa, zero-shot", "RoBERTa-base"),
        ("AudioBERT (retrieved audio)", "AudioBERT"),
        ("ITH (imagined audio)", "ITH"),
    ):
        assert labels[labels.index(ours) + 1] == published, labels
    variants = {row[2] for row in table_rows(text, "table-accuracy-seeds")[1:]}
    assert variants == {"bert-zero-shot", "bert-text", "roberta-zero-shot", "roberta-text", "audiobert", "ith"}
    # A zero-shot system is one evaluation: no seed shown (its stored placeholder is 0).
    seeds = {(row[2], row[4]) for row in table_rows(text, "table-accuracy-seeds")[1:]}
    assert {seed for variant, seed in seeds if variant.endswith("zero-shot")} == {"–"}
    assert all(seed.isdigit() for variant, seed in seeds if not variant.endswith("zero-shot"))
    assert "sample standard deviation (ddof 1)" in text and "hierarchical bootstrap" in text
    assert "gold description" in text and "gold span1 x gold span2 (crossed)" in text
    chart = text[text.index('id="chart-accuracy"') :]
    chart = chart[: chart.index("</svg>")]
    for label in (
        "BERT, zero-shot",
        "BERT-base (published)",
        "BERT, fine-tuned text-only",
        "RoBERTa, zero-shot",
        "RoBERTa-base (published)",
        "RoBERTa, fine-tuned text-only",
        "AudioBERT (retrieved audio)",
        "AudioBERT (published)",
        "ITH (imagined audio)",
        "ITH (published)",
    ):
        assert f">{label}<" in chart, label
    # Case studies: every candidate of every shown span is a player whose file exists.
    assert page.audio, "no audio elements in the case studies"
    k = tiny_run["reports"]["imagine"]["candidates"] // tiny_run["reports"]["imagine"]["unique_prompts"]
    assert len(page.audio) % k == 0
    for src in page.audio:
        assert not src.startswith(("/", "file:", "http")), src
        target = (Path(html_path).parent / unquote(src)).resolve()
        assert target.is_file(), src
        assert target.is_relative_to(Path(tiny_run["root"]) / "_imagine" / "audio")
    # The Markdown has the same tables.
    md = Path(md_path).read_text(encoding="utf-8")
    for heading in (
        "| system | source | animal dev |",
        "| task | split | variant | metric | seed |",
        "| dev | token P |",
        "| task | threshold | accepted |",
        "| stage | this run | device |",
    ):
        assert heading in md, heading
    md_links = [line for line in md.splitlines() if "[wav](<../../_imagine/audio/" in line]
    assert len(md_links) == len(page.audio)


def test_report_escapes_untrusted_text_and_degrades_without_stages(hostile_run, tiny_run):
    html_path = hostile_run["paths"]["html"]
    text = Path(html_path).read_text(encoding="utf-8")
    page = index(html_path)
    assert page.scripts == 0 and "<script" not in text and "<img src=x" not in text and "<b>cat" not in text
    assert "&lt;script&gt;document.title=&quot;pwned&quot;&lt;/script&gt;" in text
    assert "<mark>&lt;script&gt;" in text  # the span is highlighted inside the escaped sentence
    assert "not run: the run folder has no outputs of stage &#x27;fusion&#x27;" in text
    assert "not run: the run folder has no outputs of stage &#x27;span_detector&#x27;" in text
    assert {"table-accuracy", "table-compute"} <= page.ids and "chart-clap" in page.charts_with_svg
    assert len(page.audio) == 2
    md = Path(hostile_run["paths"]["markdown"]).read_text(encoding="utf-8")
    assert "<script" not in md and "<img" not in md and "&lt;script&gt;" in md
    # A prediction is data too.
    tiny_html = Path(tiny_run["paths"]["html"]).read_text(encoding="utf-8")
    assert HOSTILE_PREDICTION not in tiny_html and "&lt;/td&gt;&lt;script&gt;alert(1)" in tiny_html
    assert HOSTILE_SENTENCE and HOSTILE_SPAN  # used by the fixture


def test_report_of_bare_and_remote_runs(tmp_path):
    with pytest.raises(FileNotFoundError, match="no run 'absent'"):
        write_report(str(tmp_path), "absent")
    RunLayout(str(tmp_path), "bare").write_json({"profile": "tiny"}, "config.json")
    page = index(write_report(str(tmp_path), "bare")["html"])
    assert {"table-stages", "table-accuracy", "table-compute"} <= page.ids and not page.audio
    root = f"memory://report-{os.getpid()}-{time.time_ns()}"
    build_hostile_run(root, "remote")
    paths = write_report(root, "remote")
    layout = RunLayout(root, "remote")
    with layout.fs.open(layout.path("report", "report.html"), "rb") as handle:
        text = handle.read().decode()
    assert paths["html"].startswith("memory://") and "play only from a local copy" in text


def test_the_profile_comes_first_in_the_report_and_its_artifact(tiny_run):
    from ith_core.report.summaries import profile_statement

    page = Path(tiny_run["paths"]["html"]).read_text(encoding="utf-8")
    statement = profile_statement("tiny", "auditorybench")
    assert "random weights" in statement and "nothing about the method" in statement
    assert page.index('<p class="profile" id="profile-statement">' + statement) < page.index("<section")
    md = Path(tiny_run["paths"]["markdown"]).read_text(encoding="utf-8").splitlines()
    assert md[2] == f"**{statement}**"  # right under the title
    headline = tiny_run["paths"]["headline"]
    assert headline.startswith(f"**{statement}**")
    for row in (
        "| span detector, dev span F1 |",
        "| animal: span occurrences with audio at threshold 0.19 |",
        "| accuracy % animal dev | ITH ",
        "| accuracy % pitch test | ITH ",
    ):
        assert row in headline, row
    paper = profile_statement("paper", "auditorybench")
    assert "this implementation of the method" in paper and "differences from the reference code" in paper
    assert "audio path carries information" in profile_statement("tiny", "synthetic")


def test_case_studies_show_each_kind_and_say_how_they_were_chosen(tiny_run):
    import pyarrow.parquet as pq

    from ith_core.report.loading import CASE_KINDS, _cases, load_run

    # The kinds the run has, from its predictions (seed 42): ITH right/text-only wrong, the reverse, ...
    rows = pq.read_table(Path(tiny_run["root"]) / "tiny-report" / "fusion" / "predictions.parquet").to_pylist()
    correct = {(r["example_id"], r["model"]): r["correct"] for r in rows if r["seed"] == 42}
    expected: dict[str, dict[str, int]] = {}
    for example_id in {e for e, _ in correct}:
        ith, text = correct[(example_id, "ith")], correct[(example_id, "bert-text")]
        kind = {(True, False): "ith_only", (False, True): "text_only", (True, True): "both_right"}.get(
            (ith, text), "both_wrong"
        )
        counts = expected.setdefault(example_id.split("/")[0], {})
        counts[kind] = counts.get(kind, 0) + 1

    cases, strata = _cases(load_run(tiny_run["root"], "tiny-report"), 4)
    for task, kinds in expected.items():
        available = [k for k, _ in CASE_KINDS if k in kinds]
        assert {k: v["examples"] for k, v in strata["per_task"][task].items()} == kinds
        shown = [c["kind"] for c in cases if c["task"] == task]
        # One of each kind the run has, in a fixed order (wins and losses side by side), then again.
        assert shown[: len(available)] == available[:4]
        assert len(shown) == min(4, sum(kinds.values()))
    assert sum(len(k) for k in expected.values()) >= 4, "the made-up predictions should give several kinds"
    page = Path(tiny_run["paths"]["html"]).read_text(encoding="utf-8")
    assert "How they are chosen: per task, one example of each kind in turn" in page
    for task, kinds in strata["per_task"].items():
        assert (
            f"{task}: "
            + "; ".join(f"{dict(CASE_KINDS)[k]}: {v['shown']} shown of {v['examples']}" for k, v in kinds.items())
            in page
        )


def test_imagine_tables_show_the_threshold_used_and_ordered_quantiles(tiny_run):
    page = Path(tiny_run["paths"]["html"]).read_text(encoding="utf-8")
    report = tiny_run["reports"]["imagine"]
    used = table_rows(page, "table-threshold-used")
    assert used[0] == ["task", "threshold used", "accepted", "occurrences", "rate %"]
    assert [r[:4] for r in used[1:]] == [
        [u["task"], "0.19", str(u["accepted"]), str(u["occurrences"])] for u in report["acceptance_at_threshold"]
    ]
    assert sum(u["accepted"] for u in report["acceptance_at_threshold"]) == report["accepted"]
    order = ["q00", "q10", "q25", "q50", "q75", "q90", "q100"]
    assert table_rows(page, "table-clap-quantiles")[0] == order
    # The run's summary.json has the quantiles in JSON's sorted order (q100 before q25): the report sorts them.
    assert (
        list(
            json.loads((Path(tiny_run["root"]) / "tiny-report" / "summary.json").read_text())["stages"]["imagine"][
                "clap_score_quantiles"
            ]
        )
        != order
    )
    assert "| " + " | ".join(order) + " |" in Path(tiny_run["paths"]["markdown"]).read_text(encoding="utf-8")


def test_imagine_artifact_after_a_rerun(tiny_run):
    """A rerun reuses the plan: 0 prompts were in the store when it was made, all are now; every shard is
    skipped; the thresholds used and the quantiles in order."""
    from ith_core.report.summaries import imagine_markdown
    from ith_core.stages import imagine as imagine_stage

    cfg = tiny_run_config(tiny_run["root"], "tiny-report", tiny_run["bench_dir"])
    plan = imagine_stage.plan_imagine(cfg, tiny_run["model_paths"])
    assert plan["reused"] and plan["already_in_store"] == 0 and plan["in_store_now"] == plan["unique_prompts"]
    results = [imagine_stage.generate_candidates(cfg, tiny_run["model_paths"], name, "cpu") for name in plan["shards"]]
    status = {"shards": results, "counts": {"skipped": len(results)}}
    report = imagine_stage.select_candidates(cfg)
    assert report["cached"]
    md = imagine_markdown(cfg, plan, status, report)
    lines = md.splitlines()
    assert lines[2].startswith("**Profile tiny: every model has random weights")  # bold, as every artifact
    assert (
        f"- prompts whose audio was already in the store: 0 when planned, {plan['unique_prompts']} at the "
        "start of this flow run"
    ) in md
    assert f"generated 0, skipped {len(results)} (their manifest existed), failed 0" in md
    assert "| animal | 0.19 |" in md and "| pitch | 0.19 |" in md
    assert "| q00 | q10 | q25 | q50 | q75 | q90 | q100 |" in md


def test_stage_times_and_devices_agree_across_tables(tiny_run):
    page = Path(tiny_run["paths"]["html"]).read_text(encoding="utf-8")
    stages = {r[0]: r for r in table_rows(page, "table-stages")[1:]}
    compute = {r[0]: r for r in table_rows(page, "table-compute")[1:]}
    seconds_total = tiny_run["reports"]["imagine"]["seconds_total"]
    assert float(stages["imagine"][3]) == float(compute["imagine"][3]) == round(seconds_total, 2)
    assert seconds_total > tiny_run["reports"]["imagine"]["seconds"]  # plan and shards included
    assert {name: compute[name][2] for name in ("ingest", "span_detector", "spans", "imagine")} == {
        "ingest": "–",
        "span_detector": "cpu",
        "spans": "cpu",
        "imagine": "cpu",
    }
    assert not any(row[2] == "auto" for row in compute.values())
    detector = tiny_run["reports"]["span_detector"]
    assert (
        len(detector["dev_span_f1_per_epoch"]) >= 1 and detector["dev_span_f1_per_epoch"][-1] == detector["dev_span_f1"]
    )


def test_training_jobs_are_labelled_by_system_and_epochs_count_from_one(tmp_path):
    """BERT's and RoBERTa's text-only jobs share a folder name ('text-animal-seed42'): labels name the system."""
    from ith_core.report.loading import load_run
    from ith_core.report.summaries import fusion_curves_markdown, profile_statement
    from ith_core.stages import fusion as fusion_stage

    layout = RunLayout(str(tmp_path), "labels")
    layout.write_json({"profile": "tiny", "benchmark": "auditorybench"}, "config.json")
    reports = []
    for system, best in (("bert-text", 50.0), ("roberta-text", 60.0)):
        history = [{"epoch": e, "dev_accuracy": best - 10 * (1 - e), "loss": 1.0} for e in range(2)]
        job = {
            "job": "text-animal-seed42",
            "task": "animal",
            "model": "text",
            "seed": 42,
            "steps": 4,
            "best_dev": best,
            "best_epoch": 1,
            "seconds": 1.0,
            "world_size": 1,
            "history": history,
        }
        reports.append({"system": system, "seed": 42, "jobs": [job], "seconds": 1.0})
        layout.write_json({"key": "k", "report": reports[-1]}, fusion_stage.train_stage_name(system, 42), "_DONE.json")
    curves = fusion_curves_markdown("labels", reports, "tiny").splitlines()
    assert curves[2] == f"**{profile_statement('tiny')}**"
    assert curves[6] == "| job | epoch 1 | epoch 2 | samples/s |"
    assert curves[8:] == [
        "| bert-text animal seed 42 | 40.0 | **50.0** | None |",
        "| roberta-text animal seed 42 | 50.0 | **60.0** | None |",
    ]
    logs = load_run(str(tmp_path), "labels").training_logs
    assert [(j["job"], j["best_dev"]) for j in logs] == [
        ("bert-text animal seed 42", 50.0),
        ("roberta-text animal seed 42", 60.0),
    ]


def test_ingest_spans_and_curves_artifacts_start_with_the_profile_statement():
    from ith_core.report.summaries import fusion_curves_markdown, ingest_markdown, profile_statement, spans_markdown

    counts = {"rows_in": 3, "accepted": 2, "rejected": 1, "rejects_by_reason": {"empty": 1}, "flags_by_reason": {}}
    ingest = {"rows_in": 3, "accepted": 2, "rejected": 1, "source": "x", "per_split": {"animal/dev": counts}}
    detector = {
        "dev_span_f1_untrained": 0.1,
        "dev_span_f1": 0.5,
        "dev_token_f1": 0.6,
        "dev_span_precision": 0.5,
        "dev_span_recall": 0.5,
        "steps": 3,
        "train_examples": 4,
        "dev_span_f1_per_epoch": [0.2, 0.5],
    }
    spans = {
        "per_split": {"animal/dev": {"examples": 2, "examples_with_spans": 1, "examples_without_spans": 1, "spans": 1}}
    }
    for profile, benchmark in (("tiny", "auditorybench"), ("paper", "synthetic")):
        statement = f"**{profile_statement(profile, benchmark)}**"
        for md in (
            ingest_markdown("r", ingest, profile, benchmark),
            spans_markdown("r", detector, spans, profile, benchmark),
            fusion_curves_markdown("r", [], profile, benchmark),
        ):
            assert md.splitlines()[2] == statement, md
    assert "Dev span F1 after each epoch: epoch 1 0.200, epoch 2 0.500." in spans_markdown(
        "r", detector, spans, "tiny", "auditorybench"
    )


def test_a_rerun_keeps_each_stage_time_of_the_run_that_computed_it_and_marks_reuse(tmp_path):
    """summary.json of an identical rerun: every stage reused; the report shows the seconds each stage
    recorded when it was computed, with 'reused' beside them (not the rerun's seconds, not 'computed')."""
    from ith_core.report.loading import load_run, stage_reused, stage_seconds
    from ith_core.stages import fusion as fusion_stage

    layout = RunLayout(str(tmp_path), "again")
    layout.write_json({"profile": "tiny", "benchmark": "auditorybench"}, "config.json")
    computed = {
        "ingest": 3.0,
        "fusion_examples": 2.0,
        "fusion_train/ith-seed42": 861.0,
        "fusion_eval/ith-seed42": 12.0,
        "fusion_eval/bert-zero-shot": 5.0,
        "fusion": 7.0,
    }
    for stage, seconds in computed.items():
        layout.write_json({"key": "k", "report": {"seconds": seconds}}, *stage.split("/"), "_DONE.json")
    fusion = fusion_stage.fusion_summary(
        {"examples": {"seconds": 2.0, "cached": True}},
        [{"system": "ith", "seed": 42, "seconds": 861.0, "cached": True, "jobs": []}],
        [
            {"system": "ith", "seed": 42, "seconds": 12.0, "cached": True},
            {"system": "bert-zero-shot", "seed": 0, "seconds": 5.0, "cached": False},
        ],
        {"seconds": 7.0, "cached": True},
    )
    layout.write_json(
        {
            "run_id": "again",
            "profile": "tiny",
            "seconds": 4.5,
            "stages": {"ingest": {"seconds": 3.0, "cached": True}, "fusion": fusion},
        },
        "summary.json",
    )
    data = load_run(str(tmp_path), "again")
    for stage, seconds in computed.items():
        assert stage_seconds(data, stage) == seconds, stage
        assert stage_reused(data, stage) is (stage != "fusion_eval/bert-zero-shot"), stage
    paths = write_report(str(tmp_path), "again")
    page = Path(paths["html"]).read_text(encoding="utf-8")
    compute = {r[0]: r for r in table_rows(page, "table-compute")[1:]}
    assert compute["fusion_train/ith-seed42"][1] == "reused" and float(compute["fusion_train/ith-seed42"][3]) == 861.0
    assert compute["fusion_eval/bert-zero-shot"][1] == "computed" and compute["fusion"][1] == "reused"
    assert float(compute["fusion"][3]) == 7.0
    stages = {r[0]: r for r in table_rows(page, "table-stages")[1:]}
    assert stages["fusion_train/ith-seed42"][2] == "yes" and float(stages["fusion_train/ith-seed42"][3]) == 861.0
    assert stages["ingest"][2] == "yes" and stages["fusion_eval/bert-zero-shot"][2] == "no"


def test_span_highlights_never_split_a_word():
    from ith_core.report.rendering import _highlight

    sentence = "The dog barked loudly at the cat."
    inside = sentence.index("arked")
    loud = sentence.index("loud")
    assert _highlight(
        sentence, [{"char_start": inside, "char_end": inside + 3}, {"char_start": loud, "char_end": loud + 4}]
    ) == ("The dog <mark>barked</mark> <mark>loudly</mark> at the cat.")
    # Two pieces of one word become one mark; a span on whole words is left as it is.
    assert _highlight(
        sentence,
        [{"char_start": inside - 1, "char_end": inside + 2}, {"char_start": inside + 3, "char_end": inside + 5}],
    ) == ("The dog <mark>barked</mark> loudly at the cat.")
    assert _highlight(sentence, [{"char_start": 4, "char_end": 7}]) == "The <mark>dog</mark> barked loudly at the cat."


# -- the browser -----------------------------------------------------------------------------------


def _browser(tmp_path):
    return browser(tmp_path)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture()
def served_root(tiny_run, hostile_run, coincident_run):
    """The run roots behind one loopback HTTP server (the page as a colleague would open it)."""
    site = Path(tiny_run["root"]).parent / "report_site"
    site.mkdir(exist_ok=True)
    for name, run in (("tiny", tiny_run), ("hostile", hostile_run), ("coincident", coincident_run)):
        link = site / name
        if not link.exists():
            link.symlink_to(run["root"], target_is_directory=True)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _artifact_dir(tmp_path) -> Path:
    return artifact_dir(tmp_path, "report")


def _wait_for_audio(driver, timeout_s: float = 30.0) -> list[dict]:
    script = (
        "return Array.from(document.querySelectorAll('audio')).map(a => ({src: a.currentSrc, "
        "ready: a.readyState, error: a.error ? a.error.code : null, duration: a.duration}));"
    )
    deadline = time.monotonic() + timeout_s
    while True:
        states = driver.execute_script(script)
        if all(s["ready"] >= 1 or s["error"] for s in states) or time.monotonic() > deadline:
            return states
        time.sleep(0.2)


def test_report_in_headless_chromium(tiny_run, served_root, tmp_path):
    driver = _browser(tmp_path)
    try:
        driver.get(f"{served_root}/tiny/tiny-report/report/report.html")
        assert driver.title.startswith("Imagine to Hear: run tiny-report")
        found = driver.execute_script(
            "return {tables: Array.from(document.querySelectorAll('div[id^=table-] > table')).map(t => "
            "t.parentElement.id), charts: Array.from(document.querySelectorAll('figure.chart svg')).map(s => "
            "[s.closest('figure').id, s.getBoundingClientRect().width, s.getBoundingClientRect().height]), "
            "audio: document.querySelectorAll('audio').length, scripts: document.scripts.length};"
        )
        assert set(TABLES) <= set(found["tables"])
        assert {c[0] for c in found["charts"]} >= set(CHARTS)
        assert all(w > 100 and h > 100 for _, w, h in found["charts"]), found["charts"]
        assert found["audio"] > 0 and found["scripts"] == 0
        states = _wait_for_audio(driver)
        bad = [s for s in states if s["error"] or s["ready"] < 1 or not s["duration"] > 0]
        assert not bad, f"audio that did not load: {bad[:5]}"
        # Full-page screenshot: the window grows to the page's height.
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1280, min(int(height) + 40, 16000))
        shot = _artifact_dir(tmp_path) / "report-tiny.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
        print(f"\nreport screenshot: {shot}")
        logs = driver.get_log("browser")
        errors = [e for e in logs if e["level"] in ("SEVERE", "ERROR")]
        assert not errors, f"console errors: {errors}"

        # The profile statement is the first thing under the title, above every section.
        first = driver.execute_script(
            "const p = document.querySelector('header p'); return [p.id, p.getBoundingClientRect().bottom, "
            "document.querySelector('section').getBoundingClientRect().top];"
        )
        assert first[0] == "profile-statement" and first[1] < first[2]

        driver.get(f"{served_root}/hostile/hostile/report/report.html")
        assert driver.title.startswith("Imagine to Hear: run hostile")  # the payload would set "pwned" / "1"
        assert driver.execute_script("return document.scripts.length + document.querySelectorAll('img').length") == 0
        marked = driver.execute_script("return document.querySelector('p.sentence mark').textContent")
        assert marked == HOSTILE_SPAN
        assert not [s for s in _wait_for_audio(driver) if s["error"] or s["ready"] < 1]
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        assert not errors, f"console errors: {errors}"
    finally:
        driver.quit()
    shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)


def test_report_opens_from_disk(tiny_run, tmp_path):
    """file:// as a researcher double-clicking the report in the run folder: audio still resolves."""
    driver = _browser(tmp_path)
    try:
        driver.get(Path(tiny_run["paths"]["html"]).as_uri())
        states = _wait_for_audio(driver)
        assert states and not [s for s in states if s["error"] or s["ready"] < 1]
        assert all(posixpath.dirname(s["src"]).startswith(Path(tiny_run["root"]).as_uri()) for s in states)
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        assert not errors, f"console errors: {errors}"
    finally:
        driver.quit()


# For every drawn series (`g[id^=series-]`) of a chart: whether some point of its line or markers is
# the topmost element there, i.e. visible on the page, not hidden under another series.
_VISIBLE_SERIES = """
const out = {};
for (const g of document.querySelectorAll(`#${arguments[0]} g[id^=series-]`)) {
  let seen = false;
  for (const part of g.querySelectorAll('path, use')) {
    if (part.closest('defs')) continue;
    part.scrollIntoView({block: 'center', inline: 'center'});
    const r = part.getBoundingClientRect();
    const nx = Math.max(3, Math.min(15, Math.ceil(r.width))), ny = Math.max(3, Math.min(60, Math.ceil(r.height)));
    for (let i = 0; i <= nx && !seen; i++) {
      for (let j = 0; j <= ny && !seen; j++) {
        const hit = document.elementFromPoint(r.left + r.width * i / nx, r.top + r.height * j / ny);
        seen = hit !== null && hit.closest('g[id]') === g;
      }
    }
    if (seen) break;
  }
  out[g.id] = seen;
}
return out;
"""


def test_coinciding_chart_lines_stay_visible_in_chromium(coincident_run, served_root, tmp_path):
    """Two tasks with the same acceptance at every threshold and the same run threshold, two training jobs
    with the same history: every one of these series shows somewhere on the page."""
    driver = _browser(tmp_path)
    try:
        driver.get(f"{served_root}/coincident/coincident/report/report.html")
        acceptance = driver.execute_script(_VISIBLE_SERIES, "chart-acceptance")
        training = driver.execute_script(_VISIBLE_SERIES, "chart-training")
        assert set(acceptance) == {
            "series-acceptance-animal",
            "series-acceptance-pitch",
            "series-acceptance-threshold-animal",
            "series-acceptance-threshold-pitch",
        }
        assert {
            "series-loss-ith-animal-seed-42",
            "series-loss-bert-text-animal-seed-42",
            "series-dev-ith-animal-seed-42",
            "series-dev-bert-text-animal-seed-42",
        } == set(training)
        hidden = [name for name, seen in {**acceptance, **training}.items() if not seen]
        assert not hidden, f"series hidden under another one: {hidden}"
        driver.save_screenshot(str(_artifact_dir(tmp_path) / "report-coincident.png"))
    finally:
        driver.quit()
    shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)
