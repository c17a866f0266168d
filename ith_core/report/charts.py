"""The report's charts: matplotlib figures on an Agg canvas (no pyplot, no global state), saved as
inline SVG without metadata and with element ids salted per chart, so the same run gives the same
page. A chart that fails becomes a note in its place (logged), never a failed report.
"""

from __future__ import annotations

import html
import io
import logging
import re
from collections import defaultdict
from typing import Any, Callable

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ith_core.report.loading import RunData, _split_key

logger = logging.getLogger(__name__)

COLORS = {
    "ith": "#1f77b4",
    "bert-text": "#ff7f0e",
    "bert-zero-shot": "#fdae6b",
    "roberta-text": "#d62728",
    "roberta-zero-shot": "#f4a3a3",
    "audiobert": "#8c564b",
    "animal": "#2ca02c",
    "pitch": "#9467bd",
}
# A published row is drawn in its reproducing system's colour, hatched.


STYLE = {
    "font.family": "sans-serif",
    "font.size": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "svg.fonttype": "none",
    "svg.hashsalt": None,
}


def _chart(build: Callable[[], Any], name: str) -> str | None:
    try:
        # A salt per chart keeps element ids unique across the SVGs inlined in one page.
        with matplotlib.rc_context({**STYLE, "svg.hashsalt": f"ith-{name}"}):
            figure = build()
            return _svg(figure, name)
    except Exception as error:
        logger.warning("report: chart %s failed: %s", name, error)
        return f'<p class="note">chart could not be drawn: {html.escape(f"{type(error).__name__}: {error}")}</p>'


def _svg(figure, name: str) -> str:
    sink = io.StringIO()
    figure.savefig(sink, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    text = sink.getvalue()
    text = text[text.index("<svg") :]
    # matplotlib's RDF metadata block only names namespaces; the page does not need it.
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, count=1, flags=re.S)
    return text.replace("<svg ", f'<svg role="img" aria-label="{html.escape(name)} chart" class="chart-svg" ', 1)


def _figure(width: float, height: float, ncols: int = 1):
    """A Figure without pyplot: no global backend or figure registry is touched (Agg canvas)."""
    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    return figure, figure.subplots(1, ncols, squeeze=False)


def chart_accuracy(points: dict, systems: list[dict], published: dict):
    """Bars per split: every system of the run (`points`: (system, task, split) -> mean, lo, hi)
    with its interval; after each, the published row it reproduces, hatched, in its colour."""
    tasks = [t for t in ("animal", "pitch") if any(k[1] == t for k in points)]
    fig, axes = _figure(5.2 * len(tasks), 3.6, len(tasks))
    series = []
    for system in systems:
        series.append((system["name"], system["label"], "ours", system["name"]))
        if system.get("published") in published:
            series.append((system["published"], f"{system['published']} (published)", "paper", system["name"]))
    for ax, task in zip(axes[0], tasks):
        splits = sorted({k[2] for k in points if k[1] == task}, key=_split_key)
        width = 0.8 / len(series)
        for i, (key, label, source, colour) in enumerate(series):
            xs, ys, errs = [], [], [[], []]
            for j, split in enumerate(splits):
                if source == "ours":
                    got = points.get((key, task, split))
                    if not got:
                        continue
                    y, lo, hi = got["mean"], got["lo"], got["hi"]
                else:
                    y = published.get(key, {}).get(f"{task}/{split}")
                    if y is None:
                        continue
                    lo = hi = y
                xs.append(j + (i - (len(series) - 1) / 2) * width)
                ys.append(y)
                errs[0].append(max(0.0, y - lo) if lo is not None else 0.0)
                errs[1].append(max(0.0, hi - y) if hi is not None else 0.0)
            if xs:
                ax.bar(
                    xs,
                    ys,
                    width,
                    label=label,
                    color=COLORS.get(colour, "#999999"),
                    yerr=errs if source == "ours" else None,
                    capsize=3,
                    hatch="//" if source == "paper" else None,
                    edgecolor="white" if source == "ours" else "#777",
                )
        ax.set_xticks(range(len(splits)), splits)
        ax.set_title(f"{task}")
        ax.set_xlabel("split")
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(0, 100)
    axes[0][-1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=9)
    return fig


def chart_clap(data: RunData, thresholds: dict):
    tasks_of: dict[str, set] = defaultdict(set)
    for row in data.mapping or []:
        tasks_of[row["audio_id"]].add(row["task"])
    scores: dict[str, list[float]] = defaultdict(list)
    for row in data.candidates:
        for task in sorted(tasks_of.get(row["audio_id"]) or {"all"}):
            scores[task].append(float(row["clap_score"]))
    fig, axes = _figure(7.5, 3.4)
    ax = axes[0][0]
    values = [v for vs in scores.values() for v in vs]
    lo, hi = min(values + list(thresholds.values())), max(values + list(thresholds.values()))
    pad = max(1e-3, (hi - lo) * 0.05)
    bins = [lo - pad + i * (hi - lo + 2 * pad) / 30 for i in range(31)]
    for task in sorted(scores):
        ax.hist(
            scores[task],
            bins=bins,
            alpha=0.55,
            label=f"{task} ({len(scores[task])} candidates)",
            color=COLORS.get(task, "#7f7f7f"),
        )
    _threshold_lines(ax, thresholds, "threshold", "clap")
    ax.set_xlabel("CLAP score (cosine similarity of span text and audio)")
    ax.set_ylabel("candidates")
    ax.legend(frameon=False, fontsize=9)
    return fig


# Series drawn over each other stay visible where they coincide: each later one is thinner,
# dashed, with a smaller marker, on top of a wide solid line with a large hollow marker.
SERIES_STYLES = (
    {
        "linestyle": "-",
        "linewidth": 2.6,
        "marker": "o",
        "markersize": 10,
        "markerfacecolor": "none",
        "markeredgewidth": 2.0,
    },
    {"linestyle": (0, (4, 3)), "linewidth": 1.6, "marker": "s", "markersize": 4.5},
    {
        "linestyle": (0, (1, 2)),
        "linewidth": 1.6,
        "marker": "^",
        "markersize": 7,
        "markerfacecolor": "none",
        "markeredgewidth": 1.4,
    },
    {"linestyle": (0, (6, 2, 1, 2)), "linewidth": 1.2, "marker": "D", "markersize": 3},
)


def series_style(index: int) -> dict:
    """The index-th series' style; later series are drawn above the earlier ones."""
    return {**SERIES_STYLES[index % len(SERIES_STYLES)], "zorder": 3 + index}


def _threshold_lines(ax, thresholds: dict, label: str, chart: str) -> None:
    """Dashed verticals whose dash patterns interleave, so two tasks' equal thresholds show both colours:
    with n lines, each draws a 4-point dash every 4n points, the i-th shifted by 4i."""
    n = max(len(thresholds), 1)
    for i, (task, value) in enumerate(sorted(thresholds.items())):
        line = ax.axvline(
            value,
            color=COLORS.get(task, "#333"),
            linewidth=1.5,
            label=f"{task} {label} {value:g}",
            linestyle=(4 * i, (4, 4 * (n - 1))) if n > 1 else "--",
        )
        line.set_gid(f"series-{chart}-threshold-{task}")


def chart_acceptance(acceptance: list[dict], thresholds: dict):
    fig, axes = _figure(7.5, 3.4)
    ax = axes[0][0]
    by_task: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for row in acceptance:
        by_task[row["task"]].append((float(row["threshold"]), 100 * float(row["rate"])))
    for i, (task, points) in enumerate(sorted(by_task.items())):
        points.sort()
        (line,) = ax.plot(
            [p[0] for p in points], [p[1] for p in points], label=task, color=COLORS.get(task), **series_style(i)
        )
        line.set_gid(f"series-acceptance-{task}")
    _threshold_lines(ax, {t: v for t, v in thresholds.items() if t in by_task}, "run threshold", "acceptance")
    ax.set_xlabel("CLAP threshold")
    ax.set_ylabel("span occurrences with audio (%)")
    ax.set_ylim(-2, 102)
    ax.legend(frameon=False, fontsize=9)
    return fig


def chart_training(span_losses: list[float], jobs: list[dict]):
    panels = (["span"] if span_losses else []) + (["loss", "dev"] if jobs else [])
    fig, axes = _figure(4.2 * len(panels), 3.3, len(panels))
    for ax, panel in zip(axes[0], panels):
        if panel == "span":
            ax.plot(range(1, len(span_losses) + 1), span_losses, marker="o", color="#2ca02c")
            ax.set_title("span detector")
            ax.set_ylabel("mean training loss")
        else:
            for i, job in enumerate(jobs):
                history = job["history"]
                key = "loss" if panel == "loss" else "dev_accuracy"
                points = [(h["epoch"] + 1, h[key]) for h in history if h.get(key) is not None]
                (line,) = ax.plot(
                    [p[0] for p in points],
                    [p[1] for p in points],
                    label=job["job"],
                    color=COLORS.get(str(job.get("model")), None),
                    **series_style(i),
                )
                line.set_gid(f"series-{panel}-{re.sub(r'[^A-Za-z0-9_-]', '-', str(job['job']))}")
            ax.set_title("fusion LM: " + ("training loss (epoch mean)" if panel == "loss" else "dev accuracy"))
            ax.set_ylabel("loss" if panel == "loss" else "dev accuracy (%)")
            ax.legend(frameon=False, fontsize=8)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    return fig
