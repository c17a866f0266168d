"""Every Markdown summary the pipeline publishes (Prefect artifacts): the profile statement that
each one starts with, the report's headline, one summary per stage (ingestion, span detection,
imagination, fusion results and training curves, AudioBERT retrieval) built from the report dict
the stage driver returns, and the report artifact's body and page. The flows call these; the
stage drivers return data only.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ith_core.evaluation.quantiles import ordered_quantiles
from ith_core.evaluation.scoring import PAPER_RESULTS, unit_phrase
from ith_core.fusion.systems import EVAL_SPLITS, SYSTEMS
from ith_core.report.loading import (
    TEXT_TWIN,
    RunData,
    _split_key,
    benchmark_of,
    generator_label,
    generator_of,
    job_label,
    profile_of,
    threshold_acceptance,
)
from ith_core.report.sections import _ours
from ith_core.report.tables import md_escape

if TYPE_CHECKING:
    from ith_core.config import RunConfig

BENCHMARK_MEANING = {
    "auditorybench": "AuditoryBench (Ok, Yoo, Lee 2024), the benchmark of the published table.",
    "synthetic": (
        "the planted-signal benchmark (ith_core.data.synthetic): AuditoryBench's layout and schemas, made-up "
        "source names unknown to the LM, answers that depend only on each source's hidden tone, which "
        "the `tone` generator renders (a check, not a text-to-audio model). ITH above text-only here "
        "proves that the audio path carries information from generation to the answer; it says nothing "
        "about real sounds or about the published numbers. Intervals are bootstrapped by source name."
    ),
    "glue": (
        "GLUE's dev sets (the release's check that fusing audio keeps language understanding): each task "
        "fine-tuned with imagined audio fused into its detected spans (ITH) and without audio (BERT), scored "
        "with GLUE's metrics. The published table has no GLUE numbers to compare with."
    ),
}


REHEARSAL = "rehearsal"


def profile_label(cfg) -> str:
    """The profile a statement is about: `rehearsal` for a paper run on rehearsal checkpoints, else the profile."""
    return REHEARSAL if getattr(cfg, "rehearsal", False) else cfg.profile


def profile_statement(profile: str | None, benchmark: str = "auditorybench") -> str:
    """What a run's numbers can mean, given its profile: the first thing the report and artifacts say."""
    if profile == REHEARSAL:
        return (
            "Rehearsal: random weights at paper size (`ith rehearse`). The paper profile's architectures, settings "
            "and stages ran with only size knobs reduced, on checkpoints with random weights and a synthetic clip "
            "pool; every accuracy is noise. It shows that the paper configuration runs and what it costs, nothing "
            "about the method."
        )
    if profile == "tiny" and benchmark == "glue":
        return (
            "Profile tiny on GLUE: every model has random weights (small configs built offline) and the tasks are "
            "fine-tuned on the run's sample, so the metrics show that GLUE runs end to end through every stage, "
            "nothing about GLUE or the method."
        )
    if profile == "paper" and benchmark == "glue":
        return (
            "Profile paper on GLUE: the method's checkpoints and the release's GLUE recipe (3 epochs, lr 2e-5, batch "
            "32, CLAP threshold 0.3) with its bugs fixed (docs/glue.md); on the full dev sets and train splits the "
            "metrics measure whether fusing imagined audio costs language understanding."
        )
    if profile == "tiny":
        if benchmark == "synthetic":
            return (
                "Profile tiny on the planted-signal benchmark: the LM, CLAP and audio encoder have random weights "
                "and the generator renders each source's hidden tone, so the accuracies say nothing about the "
                "method on real sounds; ITH above text-only shows that the audio path carries information from "
                "generation to the answer."
            )
        return (
            "Profile tiny: every model has random weights (small configs built offline), so the accuracies show "
            "that the machinery works end to end and nothing about the method."
        )
    if profile == "paper":
        if benchmark == "synthetic":
            return (
                "Profile paper on the planted-signal benchmark: the method's checkpoints, with the tone generator "
                "in place of Stable Audio; ITH above text-only shows that the audio path carries information, "
                "not how the method does on real sounds."
            )
        return (
            "Profile paper: the published checkpoints and the method's settings, with the differences from the "
            "reference code that the README lists (bugs fixed, the text's recipe where text and code disagree), "
            "so the accuracies measure this implementation of the method on this run's examples, not the "
            "reference release; comparable with the published numbers only on the full splits."
        )
    return f"Profile {profile or 'unknown'}: not recorded in this run folder; read its numbers with care."


def synthetic_mechanisms(config: dict | None) -> str:
    """What a synthetic run set of the two mechanisms (pool coverage, imperfect imagination and its scorer);
    the coverage is always stated, since at 1.0 AudioBERT's retrieval is an exact-name lookup."""
    synthetic = (config or {}).get("synthetic") or {}
    coverage = float(synthetic.get("pool_coverage", 1.0))
    if coverage >= 1.0:
        parts = [
            "AudioBERT's pool: clips of every source name (synthetic.pool_coverage 1.0), so its retrieval is an "
            "exact-name lookup."
        ]
    else:
        parts = [
            f"AudioBERT's pool: clips of {coverage:.0%} of each split's source names (synthetic.pool_coverage "
            f"{coverage:g}); the other names retrieve the best-matching clip of another source."
        ]
    q = float(synthetic.get("tone_error_rate", 0.0))
    if q > 0:
        parts.append(
            f"Imperfect imagination: each candidate renders a wrong band with probability {q:g} "
            "(synthetic.tone_error_rate, drawn from the candidate's seed)."
        )
    if synthetic.get("scorer") == "planted":
        parts.append(
            "Candidates are scored by the planted scorer (how well the audio fits the named source's band; "
            "not CLAP) against the run's CLAP thresholds."
        )
    return " ".join(parts)


def run_statements(data: RunData) -> list[str]:
    """Profile first, then the benchmark."""
    benchmark = benchmark_of(data)
    meaning = BENCHMARK_MEANING.get(benchmark, benchmark)
    if benchmark == "synthetic":
        meaning = f"{meaning} {synthetic_mechanisms(data.config)}"
    return [profile_statement(profile_of(data), benchmark), f"Benchmark: {meaning}"]


def headline_markdown(data: RunData) -> str:
    """The profile statement, then the run's headline numbers: the report artifact's description."""
    profile, benchmark = run_statements(data)
    lines = [f"**{md_escape(profile)}**", "", md_escape(benchmark)]
    rows: list[tuple[str, str]] = []
    ingest = data.stage_report("ingest") or {}
    if "accepted" in ingest:
        rows.append(
            (
                "benchmark rows",
                f"{ingest.get('rows_in')} read: {ingest['accepted']} accepted, {ingest.get('rejected')} rejected",
            )
        )
    detector = data.stage_report("span_detector") or {}
    if "dev_span_f1" in detector:
        rows.append(
            (
                "span detector, dev span F1",
                f"{detector.get('dev_span_f1_untrained', 0):.3f} untrained -> {detector['dev_span_f1']:.3f} trained",
            )
        )
    rows.append(("generator (imagined audio)", generator_label(generator_of(data))))
    imagine = data.stage_report("imagine") or {}
    for row in threshold_acceptance(imagine, data.selection):
        rows.append(
            (
                f"{row['task']}: span occurrences with audio at threshold {row['threshold']:g}",
                f"{row['accepted']} of {row['occurrences']} ({100 * row['rate']:.1f} %)",
            )
        )
    ours = _ours(data) if data.fusion else {}
    for task, split in sorted({(k[1], k[2]) for k in ours}, key=lambda ts: (ts[0], _split_key(ts[1]))):
        cells = [
            f"{label} {ours[(v, task, split)]['text']}"
            for v, label in (("ith", "ITH"), (TEXT_TWIN, "BERT text-only"))
            if (v, task, split) in ours
        ]
        rows.append((f"accuracy % {task} {split}", "; ".join(cells)))
    seconds = (data.summary or {}).get("seconds")
    if seconds is not None:
        rows.append(("pipeline wall time", f"{seconds:.0f} s"))
    if rows:
        lines += ["", "| | |", "|---|---|"] + [f"| {md_escape(k)} | {md_escape(v)} |" for k, v in rows]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Stage summaries


def ingest_markdown(run_id: str, report: dict, profile: str, benchmark: str) -> str:
    lines = [
        f"# Ingestion of run {run_id}",
        "",
        f"**{profile_statement(profile, benchmark)}**",
        "",
        f"{report['rows_in']} rows read: {report['accepted']} accepted, {report['rejected']} rejected "
        f"(rows in = accepted + rejected). Source: `{report['source']}`.",
        "",
        "| task/split | rows in | accepted | rejected | rejects by reason | flags (kept) |",
        "|---|---:|---:|---:|---|---|",
    ]
    for name, counts in sorted(report["per_split"].items()):
        rejects = ", ".join(f"{k} {v}" for k, v in counts["rejects_by_reason"].items() if v) or "-"
        flags = ", ".join(f"{k} {v}" for k, v in counts["flags_by_reason"].items() if v) or "-"
        lines.append(
            f"| {name} | {counts['rows_in']} | {counts['accepted']} | {counts['rejected']} | {rejects} | {flags} |"
        )
    return "\n".join(lines) + "\n"


def spans_markdown(run_id: str, detector: dict, spans: dict, profile: str, benchmark: str) -> str:
    lines = [
        f"# Span detection of run {run_id}",
        "",
        f"**{profile_statement(profile, benchmark)}**",
        "",
        f"Dev span F1 {detector['dev_span_f1_untrained']:.3f} untrained -> {detector['dev_span_f1']:.3f} "
        f"trained (token F1 {detector['dev_token_f1']:.3f}, span precision {detector['dev_span_precision']:.3f}, "
        f"recall {detector['dev_span_recall']:.3f}; {detector['steps']} steps on {detector['train_examples']} "
        "train examples).",
        "",
    ]
    if detector.get("dev_span_f1_per_epoch"):
        lines += [
            "Dev span F1 after each epoch: "
            + ", ".join(f"epoch {e + 1} {f:.3f}" for e, f in enumerate(detector["dev_span_f1_per_epoch"]))
            + ".",
            "",
        ]
    lines += ["| task/split | examples | with spans | without | spans |", "|---|---:|---:|---:|---:|"]
    for name, counts in sorted(spans["per_split"].items()):
        lines.append(
            f"| {name} | {counts['examples']} | {counts['examples_with_spans']} | "
            f"{counts['examples_without_spans']} | {counts['spans']} |"
        )
    return "\n".join(lines) + "\n"


def imagine_markdown(cfg: RunConfig, plan: dict, status: dict, report: dict | None) -> str:
    """The run's markdown summary: what the profile means, shards, dedup, the thresholds used and their
    acceptance, acceptance over the grid, the score distribution."""
    counts = status["counts"]
    lines = [
        f"# ith-imagine: run `{cfg.effective_run_id}`",
        "",
        f"**{profile_statement(profile_label(cfg), cfg.benchmark)}**",
        "",
        f"- span occurrences: {plan['occurrences']}, unique prompts: {plan['unique_prompts']} "
        f"(dedup ratio {plan['dedup_ratio']:.2f}x)",
        f"- prompts whose audio was already in the store: {plan['already_in_store']} when planned, "
        f"{plan.get('in_store_now', plan['already_in_store'])} at the start of this flow run",
        f"- sampling: {plan.get('sampling', 'all')}; audio: {plan.get('audio_format', 'wav')}, "
        f"kept for {plan.get('keep_audio', 'all')} candidates"
        + (
            f"; disk: {plan['disk']['bytes_at_most'] / 2**30:.2f} GiB at most, "
            f"{plan['disk']['bytes_expected'] / 2**30:.2f} GiB expected"
            if plan.get("disk")
            else ""
        ),
        f"- shards planned: {len(plan['shards'])}; this flow run: generated {counts.get('done', 0)}, "
        f"skipped {counts.get('skipped', 0)} (their manifest existed), failed {counts.get('failed', 0)}",
        "",
    ]
    failed = [s for s in status["shards"] if s["status"] == "failed"]
    if failed:
        lines += ["## Failed shards (rerun with `ith rerun-failed`)", "", "| shard | error |", "|---|---|"]
        lines += [f"| {s['shard']} | {str(s.get('error', '')).splitlines()[0][:200]} |" for s in failed]
        lines.append("")
    done = [s for s in status["shards"] if s["status"] == "done"]
    if done:
        lines += [
            "## Shards generated",
            "",
            "| shard | device | worker | prompts | candidates per prompt | seconds | generate s |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {s['shard']} | {s['device']} | {s['worker']['host']}:{s['worker']['pid']} | {s['prompts']} | "
            f"{s['candidates_per_prompt']} | {s['seconds']} | {s['seconds_generate']} |"
            for s in done
        ]
        lines.append("")
    if report:
        used = report.get("acceptance_at_threshold") or []
        if used:
            lines += [
                "## Thresholds used by this run",
                "",
                "| task | threshold | accepted | rate |",
                "|---|---|---|---|",
            ]
            lines += [
                f"| {r['task']} | {r['threshold']:g} | {r['accepted']}/{r['occurrences']} | {r['rate']:.1%} |"
                for r in used
            ]
            lines.append("")
        lines += [
            "## Acceptance over the threshold grid (span occurrences)",
            "",
            "| task | threshold | accepted | rate | undetermined (lazy sampling) |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['task']} | {r['threshold']:.2f} | {r['accepted']}/{r['occurrences']} | {r['rate']:.1%} | "
            f"{r.get('undetermined', 0)} |"
            for r in report["acceptance_by_threshold"]
        ]
        quantiles = ordered_quantiles(report["clap_score_quantiles"])
        lines += [
            "",
            f"## CLAP score distribution ({report['candidates']} generated candidates, "
            f"{report.get('candidates_per_prompt', '?')} per prompt)",
            "",
            "| " + " | ".join(k for k, _ in quantiles) + " |",
            "|" + "---|" * len(quantiles),
            "| " + " | ".join(str(v) for _, v in quantiles) + " |",
        ]
    return "\n".join(lines) + "\n"


def _fusion_cell(row: dict | None) -> str:
    if row is None:
        return "-"
    text = f"{row['mean']:.2f}"
    if row["seeds"] > 1:
        text += f" ± {row['std']:.2f}"
    if row.get("ci_low") is not None:
        text += f" [{row['ci_low']:.1f}, {row['ci_high']:.1f}]"
    return text


def fusion_results_markdown(run_id: str, report: dict, profile: str = "") -> str:
    """The table: every system x task x split, mean ± sd over seeds [95 % interval], published beside."""
    ours = {
        (r["model"], r["task"], r["split"]): r
        for r in report.get("over_seeds") or []
        if r["metric"] in ("exact_match", "accuracy")
    }
    columns = [(t, s) for t in ("animal", "pitch") for s in EVAL_SPLITS if any((m, t, s) in ours for m in SYSTEMS)]
    # The profile first: what these accuracies can mean.
    lines = [
        f"# ith-fusion: run `{run_id}`",
        "",
        f"**{profile_statement(profile or None, report.get('benchmark') or 'auditorybench')}**",
        "",
    ]
    if report.get("benchmark") == "synthetic":
        lines += [
            "**Benchmark synthetic (planted signal): the answer depends only on each source's hidden tone; "
            "systems that hear the audio should beat text, which can only reach the constant-answer level.**",
            "",
        ]
    if isinstance(report.get("generator"), dict):
        lines += [f"Imagined audio: generator {md_escape(generator_label(report['generator']))}.", ""]
    lines += [
        "Accuracy (%) on the run's sampled examples: mean ± sample sd over seeds [95 % interval of the "
        f"seed-mean: hierarchical bootstrap over seeds, then {unit_phrase(report.get('bootstrap_unit'))}]. "
        "Each published row (Yoo, Ok, Lee 2025, AuditoryBench, full splits) stands under the system of this "
        "run that reproduces it.",
        "",
        "| system | " + " | ".join(f"{t} {s}" for t, s in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    published = PAPER_RESULTS if report.get("benchmark", "auditorybench") == "auditorybench" else {}
    for system in SYSTEMS.values():
        if any((system.name, t, s) in ours for t, s in columns):
            lines.append(
                f"| {system.label} | "
                + " | ".join(_fusion_cell(ours.get((system.name, t, s))) for t, s in columns)
                + " |"
            )
            if system.published in published:
                row = published[system.published]
                lines.append(
                    f"| {system.published} (published) | "
                    + " | ".join(f"{row[f'{t}/{s}']:.2f}" if f"{t}/{s}" in row else "-" for t, s in columns)
                    + " |"
                )
    majority = report.get("majority") or {}
    if majority:
        lines.append(
            "| one constant answer | "
            + " | ".join(
                f"{majority[f'{t}/{s}']['accuracy']:.2f}" if f"{t}/{s}" in majority else "-" for t, s in columns
            )
            + " |"
        )
    paired = report.get("paired") or []
    if paired:
        lines += [
            "",
            "Paired comparisons on the same rows (difference in points, 95 % interval; hierarchical bootstrap "
            "over each system's seeds, then the shared units):",
            "",
            "| comparison | task | split | difference | interval | share of resamples where a is not better |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {p['a']} - {p['b']} | {p['task']} | {p['split']} | {p['difference']:+.2f} | "
            f"[{p['ci_low']:.1f}, {p['ci_high']:.1f}] | {p['p_not_better']:.3f} |"
            for p in paired
        ]
    return "\n".join(lines) + "\n"


def fusion_curves_markdown(
    run_id: str, train_reports: list[dict], profile: str, benchmark: str = "auditorybench"
) -> str:
    """Dev accuracy per epoch of every training job (the training curves), epochs counted from 1."""
    jobs = [(job_label(r["system"], j, j["job"]), j) for r in train_reports for j in r.get("jobs", [])]
    epochs = max((len(j["history"] or []) for _, j in jobs), default=0)
    lines = [
        f"# ith-fusion training curves: run `{run_id}`",
        "",
        f"**{profile_statement(profile, benchmark)}**",
        "",
        "Dev accuracy (%) after each epoch; the bold epoch is the dev-best checkpoint that is scored.",
        "",
        "| job | " + " | ".join(f"epoch {e + 1}" for e in range(epochs)) + " | samples/s |",
        "|---|" + "---|" * (epochs + 1),
    ]
    for label, j in jobs:
        cells = []
        for e in range(epochs):
            h = (j["history"] or [])[e] if e < len(j["history"] or []) else None
            cell = "-" if h is None else f"{h['dev_accuracy']:.1f}"
            cells.append(f"**{cell}**" if h is not None and e == j["best_epoch"] else cell)
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {j.get('train_samples_per_s')} |")
    return "\n".join(lines) + "\n"


def audiobert_markdown(run_id: str, report: dict) -> str:
    """A short markdown summary of the retrieval stage (for a Prefect artifact)."""
    lines = [
        f"# AudioBERT retrieval of run `{run_id}`",
        "",
        f"Pool `{report['pool']}` ({report['pool_kind']}): {report['pool_clips']} clips, "
        f"{report['pool_rejects']} rejected; policy `{report['policy']}`, query mode `{report['query_mode']}`.",
        "",
        f"{report['span_occurrences']} span occurrences ({report['distinct_queries']} distinct queries) of "
        f"{report['examples']} examples; {report['examples_without_span']} examples without a span (scored as "
        f"text); {report['spans_with_clip']} spans got a clip, {report['spans_without_clip']} none; "
        f"{report['distinct_top1_clips']} distinct top-1 clips.",
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# The report's artifacts


def report_location(location: str) -> str:
    """Where a report file is, as a reader copies it: a local path made absolute, a URL (s3://, https://) as it is."""
    return location if "://" in location else str(Path(location).resolve())


def report_artifact_markdown(run_id: str, report: dict) -> str:
    """The report artifact's body: where the HTML and Markdown reports are, as copyable text, then the
    headline. Browsers refuse file:// links from a page served over http, so a local report is given
    as a path to paste into the address bar (or open from a shell); an http(s) report is also a link."""
    html, markdown = report_location(report["html"]), report_location(report["markdown"])
    lines = [
        f"### Report of run {run_id}",
        "",
        f"HTML report (paste the path into the browser's address bar on the machine that holds it): `{html}`",
        "",
        f"Markdown report: `{markdown}`",
    ]
    if html.startswith(("http://", "https://")):
        lines += ["", f"[report of run {run_id} (HTML)]({html})"]
    if report.get("headline"):
        lines += ["", report["headline"]]
    return "\n".join(lines) + "\n"


# A Markdown report larger than this is shown cut, with a line saying so (a tiny run's is ~20 kB).
REPORT_PAGE_MAX_CHARS = 1_000_000


def report_page(markdown: str, location: str) -> str:
    """The whole Markdown report as the UI renders it, cut at REPORT_PAGE_MAX_CHARS with a note."""
    note = (
        f"*The whole report of this run, as `{location}` holds it. Its audio players and charts are in "
        "the HTML report; the relative audio links below do not open from the UI.*\n\n"
    )
    if len(markdown) > REPORT_PAGE_MAX_CHARS:
        markdown = (
            markdown[:REPORT_PAGE_MAX_CHARS] + f"\n\n*(cut at {REPORT_PAGE_MAX_CHARS} characters of "
            f"{len(markdown)}: read the file for the rest)*\n"
        )
    return note + markdown
