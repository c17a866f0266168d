"""`ith run` and `ith config`: the options -> the run's settings, the pipeline run, the printed summary.

Prefect, torch and the pipeline are imported inside the commands, when they run.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from cli.console import quiet_console
from ith_core.config import ConfigError

# The UI of the Prefect server `ith serve` started, when `ith run` records into one (set by cli/main.py).
SERVER_UI: str | None = None


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _settings(pairs: list[str]) -> dict[str, dict[str, Any]]:
    """`SECTION.NAME=VALUE` (or `SECTION.NAME.KEY=VALUE` for a mapping) -> nested overrides."""
    settings: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        parts = key.split(".")
        if not sep or len(parts) < 2 or not all(parts):
            raise ConfigError(
                f"--set takes SECTION.NAME=VALUE or SECTION.NAME.KEY=VALUE (e.g. span.epochs=3, "
                f"imagine.thresholds.animal=0.4), got {pair!r}"
            )
        node: dict[str, Any] = settings
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {pair!r}: {'.'.join(parts[:-1])} was already given a value")
            node = child
        node[parts[-1]] = _parse_value(value)
    return settings


def _print_summary(result: dict, profile: str, benchmark: str) -> None:
    from ith_core.report.summaries import profile_statement

    stages = result["stages"]
    ingest, detector, spans = stages["ingest"], stages["span_detector"], stages["spans"]
    print()
    print(f"run {result['run_id']}: {result['run_dir']}")
    print(f"  {profile_statement(profile, benchmark)}")
    print(f"  {'stage':<15} {'cached':<7} {'seconds':>8}  result")
    print(
        f"  {'ingest':<15} {str(ingest['cached']).lower():<7} {ingest['seconds']:>8.1f}  "
        f"{ingest['rows_in']} rows: {ingest['accepted']} accepted, {ingest['rejected']} rejected "
        f"{ {k: v for k, v in ingest['rejects_by_reason'].items() if v} }"
    )
    print(
        f"  {'span_detector':<15} {str(detector['cached']).lower():<7} {detector['seconds']:>8.1f}  "
        f"dev span F1 {detector['dev_span_f1_untrained']:.3f} untrained -> {detector['dev_span_f1']:.3f} "
        f"trained ({detector['steps']} steps)"
    )
    print(
        f"  {'spans':<15} {str(spans['cached']).lower():<7} {spans['seconds']:>8.1f}  "
        f"{spans['spans']} spans in {spans['examples']} examples"
    )
    imagine = stages["imagine"]
    if "skipped" in imagine:
        print(f"  {'imagine':<15} skipped: {imagine['skipped']}")
    else:
        print(
            f"  {'imagine':<15} {str(imagine['cached']).lower():<7} "
            f"{imagine.get('seconds_total', imagine['seconds']):>8.1f}  "
            f"{imagine['occurrences']} span occurrences -> {imagine['unique_prompts']} prompts "
            f"({imagine['dedup_ratio']:.2f}x dedup), {imagine['candidates']} candidates; "
            f"{imagine['accepted']} of {imagine['occurrences']} got audio at {imagine['thresholds']}"
        )
    if "glue" in stages:
        from ith_core.report.glue import results_markdown

        glue = stages["glue"]
        results = glue.get("results") or {}
        trained = [r for r in glue.get("jobs") or [] if not r.get("cached")]
        print(
            f"  {'glue':<15} {'':<7} {sum(r.get('seconds', 0) for r in trained):>8.1f}  {len(trained)} (task, system, "
            f"seed) fine-tuned now, {len(glue.get('jobs') or []) - len(trained)} reused"
        )
        if results.get("results"):
            print(results_markdown(results["results"]))
    fusion = stages.get("fusion") or {}
    if not fusion:
        pass  # GLUE: fine-tuned per task (above)
    elif "skipped" in fusion:
        print(f"  {'fusion':<15} skipped: {fusion['skipped']}")
    else:
        trained = [r for r in fusion.get("train") or [] if not r.get("cached")]
        print(
            f"  {'fusion':<15} {'':<7} {fusion['seconds']:>8.1f}  {len(trained)} (system, seed) trained now, "
            f"{len(fusion.get('train') or []) - len(trained)} reused; seconds by system "
            f"{fusion.get('seconds_by_system')}"
        )
        print(_systems_table(fusion))
        if fusion.get("unscored_rows"):
            print(
                f"      {fusion['unscored_rows']} rows could not be scored: "
                + ", ".join(
                    f"{name} {a['unscored']}"
                    for name, a in sorted((fusion.get("scoring") or {}).items())
                    if a["unscored"]
                )
            )
    print(f"summary: {result['summary']}")
    print(f"report:  {result['report']}")
    if SERVER_UI:
        print(f"in the Prefect UI: {SERVER_UI}/runs/flow-run/{result['flow_run_id']}")
    else:
        print(
            "To browse runs in the Prefect UI: `ith serve` (it prints the address); `ith run` then records "
            "its runs there, with their artifacts."
        )


def _systems_table(fusion: dict) -> str:
    """Accuracy (%) per system and task/split: mean (± sd over seeds), the published number in brackets."""
    rows = {
        (r["model"], r["task"], r["split"]): r
        for r in fusion.get("over_seeds") or []
        if r["metric"] in ("exact_match", "accuracy")
    }
    paper = {
        (r["model"], r["task"], r["split"]): r.get("paper")
        for r in fusion.get("ours_vs_paper") or []
        if r["metric"] in ("exact_match", "accuracy")
    }
    columns = sorted(
        {(t, s) for _, t, s in rows},
        key=lambda ts: (ts[0], ("dev", "test", "wiki").index(ts[1]) if ts[1] in ("dev", "test", "wiki") else 9),
    )
    names = [s["name"] for s in fusion.get("systems") or []] or sorted({m for m, _, _ in rows})
    width = max([len(n) for n in names] + [6])
    lines = ["      " + f"{'system':<{width}}  " + "  ".join(f"{f'{t} {s}':>18}" for t, s in columns)]
    for name in names:
        cells = []
        for t, s in columns:
            r = rows.get((name, t, s))
            if r is None:
                cells.append(f"{'-':>18}")
                continue
            text = f"{r['mean']:.1f}" + (f"±{r['std']:.1f}" if r["seeds"] > 1 else "")
            if paper.get((name, t, s)) is not None:
                text += f" ({paper[(name, t, s)]:.1f})"
            cells.append(f"{text:>18}")
        lines.append("      " + f"{name:<{width}}  " + "  ".join(cells))
    legend = "      accuracy %, mean (± sample sd over seeds); (published: the row it reproduces)"
    results = (fusion.get("outputs") or {}).get("results.json")
    lines.append(f"{legend}; intervals: {results}" if results else legend)
    return "\n".join(lines)


def _run_params(args: argparse.Namespace) -> dict[str, Any]:
    """`ith run`/`ith config` options -> the flow's parameters (checked for shape, not yet validated)."""
    settings = _settings(args.settings)
    sections = ("span", "imagine", "fusion", "synthetic", "audiobert", "glue")
    unknown = sorted(set(settings) - set(sections))
    if unknown:
        hint = (
            " (data settings have their own options: --data-dir, --tasks, --splits, --sample)"
            if unknown[0] == "data"
            else ""
        )
        raise ConfigError(
            f"--set {unknown[0]}.*: {unknown[0]!r} is not a settings section; sections: {', '.join(sections)}{hint}"
        )
    return dict(
        profile=args.profile,
        benchmark=args.benchmark,
        run_root=args.run_root,
        run_id=args.run_id,
        data_dir=args.data_dir,
        tasks=args.tasks,
        splits=args.splits,
        sample_limit=args.sample,
        model_dir=args.model_dir,
        device=args.device,
        systems=args.systems,
        seeds=args.seeds,
        **settings,
    )


def cmd_run(args: argparse.Namespace) -> int:
    from flows.pipeline import build_config, ith_pipeline
    from ith_core.models.profiles import check_model_dir
    from ith_core.models.span_detector import resolve_device
    from ith_core.stages import audiobert as audiobert_stage
    from storage.layout import RunLayout, check_run_root
    from storage.run_lock import hold_run_lock

    params = _run_params(args)
    cfg = build_config(**params)  # validate before Prefect starts, so a bad setting fails in a second
    check_run_root(cfg.run_root)
    resolve_device(cfg.device)  # an absent GPU is an error now, not deep inside a stage
    check_model_dir(cfg.model_dir)
    audiobert_stage.check_pool(cfg)
    quiet_console()
    # One writer per run, taken before Prefect starts so that a second `ith run` refuses at once.
    with hold_run_lock(RunLayout(cfg.run_root, cfg.effective_run_id), wait=args.wait_lock):
        result = ith_pipeline(**params)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        _print_summary(result, args.profile, args.benchmark)
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from flows.pipeline import build_config

    cfg = build_config(**_run_params(args))
    resolved = {**cfg.resolved(), "run_id": cfg.effective_run_id}
    if args.json:
        print(json.dumps(resolved, indent=2))
        return 0
    from ith_core.config import SECTIONS
    from ith_core.imagination.generators import setting_notes

    # Stable Audio's settings that mean something else, or nothing, for another generator (AudioLDM2).
    notes = {("imagine", name): note for name, note in setting_notes(cfg.imagine).items()}
    print(
        f"run id {cfg.effective_run_id} (profile {cfg.profile}, benchmark {cfg.benchmark}); "
        f"written as <run root>/<run id>/config.json"
    )
    for name in ("run_root", "model_dir", "device"):
        print(f"  {name:<22} {json.dumps(resolved[name])}")
    for section, model in SECTIONS.items():
        if section in ("synthetic", "glue") and cfg.benchmark != section:
            continue
        print(f"[{section}]")
        for name, field in model.model_fields.items():
            print(f"  {name:<22} {json.dumps(resolved[section][name]):<28} {field.description}")
            if (section, name) in notes:
                print(f"  {'':<22} note: {notes[section, name]}")
    return 0
