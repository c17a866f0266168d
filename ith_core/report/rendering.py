"""The run report: one self-contained HTML page (and the same tables in Markdown) per run.

    from ith_core.report.rendering import write_report
    paths = write_report("runs", "tiny-0123456789ab")   # {"html": ..., "markdown": ...}

Reads whatever the run folder holds (`loading.load_run`, through `storage.layout.RunLayout`, so any
fsspec URL) and writes `<run>/report/report.html` and `<run>/report/report.md`, each atomically.
Every section stands alone: a stage whose outputs are absent is reported as "not run", an
unreadable file as the error it raised; the report itself never fails because a stage is missing.

The HTML page needs nothing from the network: charts are inline SVG (matplotlib, Agg), styles
are inline, there is no script. Audio players link the shared audio store by relative paths
(`../../_imagine/audio/...` from `<run>/report/`), so the page plays the clips when opened from
the run root on disk, or from a copy of the run root that keeps `_imagine/` beside the run.
Everything taken from data (sentences, spans, predictions) is escaped: span text is untrusted.
"""

from __future__ import annotations

import datetime as _dt
import html
import logging
import posixpath
import re
from urllib.parse import quote

import fsspec

from ith_core.report.glue import section_glue
from ith_core.report.loading import CASE_KINDS, TEXT_TWIN, RunData, _cases, load_run
from ith_core.report.sections import (
    _not_run,
    section_accuracy,
    section_compute,
    section_imagine,
    section_overview,
    section_rehearsal,
    section_spans,
    section_training,
)
from ith_core.report.summaries import headline_markdown, run_statements
from ith_core.report.tables import Raw, Section, Table, _fmt, _html_table, _md_table, md_escape
from storage import run_files
from storage.audio_store import STORE_DIR

logger = logging.getLogger(__name__)

# From <run_root>/<run_id>/report/ up to the run root, where the audio store lives.
STORE_FROM_REPORT = f"../../{STORE_DIR}/"


# ---------------------------------------------------------------------------------------------
# Case studies


def _audio_src(data: RunData, audio_path: str) -> tuple[str, bool]:
    """(src relative to the report file, whether the file exists); non-local stores are not checked."""
    src = STORE_FROM_REPORT + quote(audio_path, safe="/")
    if not data.layout.is_local:
        return src, True
    root = posixpath.dirname(data.layout.path())
    return src, data.layout.fs.exists(posixpath.join(root, STORE_DIR, audio_path))


def _word_bounds(sentence: str, start: int, end: int) -> tuple[int, int]:
    """[start, end) widened to whole words: a span from word pieces may begin or end inside a word."""

    def inside(i: int) -> bool:  # between two word characters
        return 0 < i < len(sentence) and sentence[i - 1].isalnum() and sentence[i].isalnum()

    while inside(start):
        start -= 1
    while inside(end):
        end += 1
    return start, end


def _highlight(sentence: str, spans: list[dict]) -> str:
    """The sentence with detected spans marked, each widened to whole words (overlaps merged); every
    piece escaped separately."""
    marks: list[list[int]] = []
    for span in sorted(spans, key=lambda r: r.get("char_start") or 0):
        start, end = span.get("char_start"), span.get("char_end")
        if not isinstance(start, int) or not isinstance(end, int) or start < 0 or end > len(sentence) or end <= start:
            continue
        start, end = _word_bounds(sentence, start, end)
        if marks and start <= marks[-1][1]:
            marks[-1][1] = max(marks[-1][1], end)
        else:
            marks.append([start, end])
    out, at = [], 0
    for start, end in marks:
        out.append(html.escape(sentence[at:start]))
        out.append(f"<mark>{html.escape(sentence[start:end])}</mark>")
        at = end
    out.append(html.escape(sentence[at:]))
    return "".join(out)


def section_cases(data: RunData, per_task: int) -> tuple[Section, list[dict]]:
    s = Section("cases", "Case studies")
    if not data.sampled and not data.spans:
        s.notes.append(_not_run("spans"))
        return s, []
    cases, strata = _cases(data, per_task)
    labels = dict(CASE_KINDS)
    s.intro.append(
        "How they are chosen: per task, one example of each kind in turn (ITH right and text-only wrong, "
        "the reverse, both right, both wrong), so the run's losses are shown beside its wins; within a "
        "kind, examples whose spans got audio first, then a fixed order (a hash of the example id), never "
        "by accuracy." + (f" Predictions of seed {strata['seed']}." if strata["seed"] is not None else "")
    )
    for task, kinds in strata["per_task"].items():
        s.intro.append(
            f"{task}: "
            + "; ".join(f"{labels[k]}: {v['shown']} shown of {v['examples']}" for k, v in kinds.items())
            + "."
        )
    if strata["left_out_unscored"]:
        s.intro.append(
            f"{strata['left_out_unscored']} sampled examples of splits fusion did not evaluate (no "
            "predictions to compare) are not candidates."
        )
    s.intro.append(
        "Each case: the sentence with the detected spans marked (widened to whole words), every generated "
        "candidate of each span with its CLAP score (the chosen one highlighted: the first candidate, in "
        "index order, at or above the threshold), and the predictions of the text-only LM and of ITH."
    )
    if not data.layout.is_local:
        s.notes.append(
            f"The run folder is not on local disk ({data.layout.url()}): the audio links are relative "
            f"to the run root and play only from a local copy of it (copy both {data.layout.run_id}/ and "
            f"{STORE_DIR}/ from {data.layout.run_root})."
        )
    if data.selection is None:
        s.notes.append(_not_run("imagine") + ": no audio to show.")
    if data.fusion is None:
        s.notes.append(_not_run("fusion") + ": no predictions to show.")
    parts = []
    for case in cases:
        e = html.escape
        pred_html = ""
        if case["predictions"]:
            cells = []
            for variant, label in ((TEXT_TWIN, "BERT text-only"), ("ith", "ITH")):
                p = case["predictions"].get(variant)
                if p is None:
                    cells.append(f"<td>{label}</td><td>–</td><td></td>")
                    continue
                ok = p.get("correct")
                mark = '<span class="ok">correct</span>' if ok else '<span class="bad">wrong</span>'
                cells.append(f"<td>{label}</td><td><q>{e(_fmt(p.get('prediction')))}</q></td><td>{mark}</td>")
            pred_html = (
                '<table class="predictions"><thead><tr><th>model</th><th>prediction</th><th></th></tr></thead>'
                f"<tbody>{''.join(f'<tr>{c}</tr>' for c in cells)}</tbody></table>"
            )
        span_parts = []
        for span in case["spans"]:
            label = e(_fmt(span["span_text"])) if span["span_index"] >= 0 else "<em>no span: fallback prompt</em>"
            if not span["imagined"]:
                span_parts.append(
                    f'<div class="span"><h4>span: <q>{label}</q></h4><p class="note">no audio: '
                    f"imagine stage not run</p></div>"
                )
                continue
            rows = []
            for cand in span["candidates"]:
                chosen = cand["candidate"] == span["chosen"]
                if cand["audio_path"] is None:
                    player = '<span class="note">audio not kept (imagine.keep_audio=selected)</span>'
                else:
                    src, exists = _audio_src(data, cand["audio_path"])
                    player = (
                        f'<audio controls preload="metadata" src="{e(src)}"></audio>'
                        if exists
                        else f'<span class="bad">file missing: {e(src)}</span>'
                    )
                passes = span["threshold"] is not None and cand["clap_score"] >= span["threshold"]
                rows.append(
                    f'<tr class="{"chosen" if chosen else ""}"><td class=num>{cand["candidate"]}</td>'
                    f'<td>{player}</td><td class="num{"" if passes else " below"}">{cand["clap_score"]:.3f}</td>'
                    f"<td>{'chosen' if chosen else ''}</td></tr>"
                )
            verdict = (
                f"candidate {span['chosen']} chosen"
                if span["accepted"]
                else "no candidate reached the threshold: this span is not fused"
            )
            span_parts.append(
                f'<div class="span"><h4>span: <q>{label}</q> <small>threshold {_fmt(span["threshold"], 3)}; '
                f'{e(verdict)}</small></h4><table class="candidates"><thead><tr><th>#</th><th>audio</th>'
                f"<th class=num>CLAP</th><th></th></tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
            )
        sentence = _highlight(case["sentence"], case["detected"]) if case["sentence"] else "<em>sentence not found</em>"
        parts.append(
            f'<article class="case" id="case-{e(re.sub(r"[^A-Za-z0-9_-]", "-", case["example_id"]))}">'
            f'<h3>{e(case["task"])}: <code>{e(case["example_id"])}</code> <small class="kind">'
            f"{e(labels[case['kind']])}</small></h3>"
            f'<p class="sentence">{sentence}</p><p>gold answer: <strong>{e(_fmt(case["gold"]))}</strong>; '
            f'detected spans: {len(case["detected"])}</p>{pred_html}<div class="spans">{"".join(span_parts)}</div>'
            f"</article>"
        )
    s.raw_html = "".join(parts) or '<p class="note">no examples to show</p>'
    return s, cases


# ---------------------------------------------------------------------------------------------
# Rendering

CSS = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Arial, sans-serif;
       margin: 0; color: #1b1f24; background: #fafbfc; line-height: 1.45; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 32px 64px; background: #fff; }
header { border-bottom: 2px solid #1f77b4; margin-bottom: 16px; }
h1 { font-size: 1.7em; margin: 0.2em 0; }
h2 { font-size: 1.3em; margin-top: 2em; border-bottom: 1px solid #d0d7de; padding-bottom: 4px; }
h3 { font-size: 1.05em; margin: 0.4em 0; }
h3 small.kind { font-weight: normal; color: #57606a; margin-left: 8px; }
h4 { font-size: 0.95em; margin: 0.8em 0 0.3em; font-weight: 600; }
h4 small { font-weight: normal; color: #57606a; }
nav { font-size: 0.92em; } nav a { margin-right: 14px; color: #0969da; text-decoration: none; }
.meta { color: #57606a; font-size: 0.9em; }
p.profile { font-weight: 600; background: #ddf4ff; border-left: 4px solid #0969da; padding: 8px 12px; }
table { border-collapse: collapse; margin: 10px 0 18px; font-size: 0.88em; }
caption { text-align: left; font-weight: 600; padding: 4px 0; color: #24292f; }
th, td { border: 1px solid #d0d7de; padding: 4px 9px; vertical-align: middle; }
th { background: #f0f3f6; text-align: left; }
tbody tr:nth-child(even) { background: #f8f9fa; }
.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.accuracy td:first-child { font-weight: 600; white-space: nowrap; }
figure { margin: 12px 0 24px; } figcaption { font-size: 0.9em; color: #57606a; }
figure svg { max-width: 100%; height: auto; }
.note { color: #8a6100; background: #fff8e5; border-left: 3px solid #d4a72c; padding: 6px 10px; }
.problem { color: #82071e; background: #ffebe9; border-left: 3px solid #cf222e; padding: 6px 10px; }
article.case { border: 1px solid #d0d7de; border-radius: 6px; padding: 10px 16px; margin: 14px 0; }
.sentence { font-size: 1.05em; }
.spans { display: flex; flex-wrap: wrap; gap: 0 28px; }
table.keyvalue td:first-child { color: #57606a; }
mark { background: #fff3a3; padding: 0 2px; border-radius: 2px; }
tr.chosen { background: #dafbe1 !important; font-weight: 600; }
td.below { color: #8c959f; }
audio { height: 30px; width: 260px; vertical-align: middle; }
.ok { color: #1a7f37; font-weight: 600; } .bad { color: #cf222e; font-weight: 600; }
code { font-size: 0.92em; }
"""


def _section_html(s: Section) -> str:
    parts = [f'<section id="{s.anchor}"><h2>{html.escape(s.title)}</h2>']
    parts += [f"<p>{html.escape(p)}</p>" for p in s.intro]
    parts += [f'<p class="note">{html.escape(n)}</p>' for n in s.notes]
    for table_id, table in s.tables:
        css = "accuracy" if table_id == "table-accuracy" else ""
        parts.append(f'<div id="{table_id}">{_html_table(table, css)}</div>')
    for chart_id, caption, svg in s.charts:
        if svg is None:
            parts.append(
                f'<figure id="{chart_id}" class="chart missing"><p class="note">{html.escape(caption)}: '
                f"no data (stage not run)</p></figure>"
            )
        else:
            parts.append(
                f'<figure id="{chart_id}" class="chart">{svg}<figcaption>{html.escape(caption)}</figcaption></figure>'
            )
    parts.append(s.raw_html)
    parts.append("</section>")
    return "".join(parts)


def render_html(data: RunData, sections: list[Section], generated: str) -> str:
    title = f"Imagine to Hear: run {data.layout.run_id}"
    nav = "".join(f'<a href="#{s.anchor}">{html.escape(s.title)}</a>' for s in sections)
    problems = "".join(f'<p class="problem">could not read {html.escape(p)}</p>' for p in data.problems)
    profile, benchmark = run_statements(data)
    # The profile first: what the numbers below can mean.
    statements = (
        f'<p class="profile" id="profile-statement">{html.escape(profile)}</p>'
        f'<p class="benchmark" id="benchmark-statement">{html.escape(benchmark)}</p>'
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        # No favicon request: the page loads nothing it does not hold, apart from its audio files.
        '<link rel="icon" href="data:,">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body><main>"
        f"<header><h1>{html.escape(title)}</h1>{statements}"
        f'<p class="meta">Report generated {html.escape(generated)} from '
        f"<code>{html.escape(data.layout.url())}</code>. Method: Yoo, Ok, Lee 2025 (arXiv 2503.16853).</p>"
        f"<nav>{nav}</nav></header>{problems}" + "".join(_section_html(s) for s in sections) + "</main></body></html>\n"
    )


def render_markdown(data: RunData, sections: list[Section], cases: list[dict], generated: str) -> str:
    profile, benchmark = run_statements(data)
    lines = [
        f"# Imagine to Hear: run {md_escape(data.layout.run_id)}",
        "",
        f"**{md_escape(profile)}**",
        "",
        md_escape(benchmark),
    ]
    lines += [
        "",
        f"Report generated {generated} from `{data.layout.url()}`. Charts and audio players: report.html.",
        "",
    ]
    lines += [f"- could not read {md_escape(p)}" for p in data.problems]
    for s in sections:
        lines += [f"## {s.title}", ""]
        lines += [md_escape(p) + "\n" for p in s.intro]
        lines += [f"> {md_escape(n)}\n" for n in s.notes]
        for _, table in s.tables:
            lines += [_md_table(table), ""]
        if s.anchor == "cases":
            for case in cases:
                lines += [
                    f"### {md_escape(case['task'])}: {md_escape(case['example_id'])} "
                    f"({md_escape(dict(CASE_KINDS)[case['kind']])})",
                    "",
                    f"Sentence: {md_escape(case['sentence'])}",
                    "",
                    f"Gold answer: **{md_escape(case['gold'])}**; detected spans: "
                    + (", ".join(f"“{md_escape(d['span_text'])}”" for d in case["detected"]) or "none"),
                    "",
                ]
                if case["predictions"]:
                    lines += [
                        _md_table(
                            Table(
                                ["model", "prediction", "correct"],
                                [
                                    [
                                        label,
                                        (case["predictions"].get(v) or {}).get("prediction"),
                                        (case["predictions"].get(v) or {}).get("correct"),
                                    ]
                                    for v, label in ((TEXT_TWIN, "BERT text-only"), ("ith", "ITH"))
                                ],
                            )
                        ),
                        "",
                    ]
                rows = []
                for span in case["spans"]:
                    for cand in span["candidates"]:
                        src = _audio_src(data, cand["audio_path"])[0] if cand["audio_path"] else None
                        rows.append(
                            [
                                span["span_text"] if span["span_index"] >= 0 else "(fallback prompt)",
                                cand["candidate"],
                                f"{cand['clap_score']:.3f}",
                                "chosen" if cand["candidate"] == span["chosen"] else "",
                                # src: a quoted relative path of hex ids
                                Raw(f"[{src.rsplit('.', 1)[-1]}](<{src}>)") if src else "not kept",
                            ]
                        )
                if rows:
                    lines += [_md_table(Table(["span", "candidate", "CLAP", "", "audio"], rows, {1, 2})), ""]
    return "\n".join(lines) + "\n"


def write_report(run_root: str, run_id: str, cases_per_task: int = 4) -> dict[str, str]:
    """Writes `<run>/report/report.html` and `report.md` from what the run folder holds; returns their URLs."""
    fs, root = fsspec.core.url_to_fs(run_root)
    if not fs.exists(posixpath.join(root.rstrip("/") or "/", run_id)):
        raise FileNotFoundError(f"no run {run_id!r} under {run_root}: nothing to report on")
    data = load_run(run_root, run_id)
    generated = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    if (data.config or {}).get("benchmark") == "glue":
        # GLUE runs have no AuditoryBench table, training curves or case studies: their GLUE table instead.
        cases: dict = {}
        sections = [
            section_overview(data),
            *([rehearsal] if (rehearsal := section_rehearsal(data)) else []),
            section_glue(data),
            section_spans(data),
            section_imagine(data),
            section_compute(data),
        ]
    else:
        cases_section, cases = section_cases(data, cases_per_task)
        sections = [
            section_overview(data),
            *([rehearsal] if (rehearsal := section_rehearsal(data)) else []),
            section_accuracy(data),
            section_spans(data),
            section_imagine(data),
            section_training(data),
            section_compute(data),
            cases_section,
        ]
    page = render_html(data, sections, generated)
    markdown = render_markdown(data, sections, cases, generated)
    data.layout.write_bytes(page.encode("utf-8"), *run_files.REPORT_HTML)
    data.layout.write_bytes(markdown.encode("utf-8"), *run_files.REPORT_MD)
    logger.info("report: %s", data.layout.url(*run_files.REPORT_HTML))
    return {
        "html": data.layout.url(*run_files.REPORT_HTML),
        "markdown": data.layout.url(*run_files.REPORT_MD),
        "dir": data.layout.url(run_files.REPORT),
        "headline": headline_markdown(data),
    }
