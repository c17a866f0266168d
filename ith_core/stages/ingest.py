"""Stage drivers `ingest-auditorybench` and `prepare-models`: the benchmark's rows into the run folder
(accepted and rejected, rows in = accepted + rejected), and the models of the run's profile.
"""

from __future__ import annotations

import logging
import time

import pyarrow as pa
import pyarrow.compute as pc

from ith_core.config import ConfigError, RunConfig
from ith_core.data import auditorybench, glue, synthetic
from ith_core.fusion.run_systems import required_roles
from ith_core.models import model_lock, profiles
from ith_core.stages.skeleton import layout_for, reuse_or_clear, stage_key
from storage import run_files
from storage.layout import RunLayout

logger = logging.getLogger(__name__)

INGEST_VERSION = 2  # bump when ingestion writes something else for the same inputs

# Bump when a stage's code changes its output, so old results are not reused.

# -- ingestion -------------------------------------------------------------------------------


def ingest_key(cfg: RunConfig) -> str:
    if cfg.benchmark == "synthetic":
        return stage_key(
            run_files.INGEST, INGEST_VERSION, "synthetic", synthetic.settings_hash(cfg.synthetic), cfg.data.tasks
        )
    if cfg.benchmark == "glue":
        return stage_key(
            run_files.INGEST, INGEST_VERSION, "glue", cfg.data.content or cfg.data.data_dir, cfg.data.tasks
        )
    # What the files are, not where they were read: a verified copy elsewhere reuses the stage. A
    # config built without `resolve_data` (a test calling a driver) falls back to the location.
    return stage_key(run_files.INGEST, INGEST_VERSION, cfg.data.content or cfg.data.data_dir, cfg.data.tasks)


def resolve_data(cfg: RunConfig) -> RunConfig:
    """`cfg` with `data.content` filled in (`auditorybench.content_id`): what enters the run id.

    Reads the files where `--data-dir` or `$ITH_AUDITORYBENCH_DIR` point (a missing one is a
    `DataError` now, before a run folder exists); downloads nothing. The synthetic benchmark's
    files follow from its settings, which the run id already holds.
    """
    if cfg.benchmark == "glue":
        # GLUE's files, and AuditoryBench's (where the span detector learns what a sound span is).
        folder = glue.locate(cfg.data.data_dir, cfg.data.tasks)
        content = f"glue:{glue.content_id(folder, cfg.data.tasks)};auditorybench:{auditorybench.content_id(None)}"
        return cfg.model_copy(update={"data": cfg.data.model_copy(update={"content": content})})
    if cfg.benchmark != "auditorybench":
        return cfg
    content = auditorybench.content_id(cfg.data.data_dir, cfg.data.tasks)
    return cfg.model_copy(update={"data": cfg.data.model_copy(update={"content": content})})


def data_source(cfg: RunConfig) -> str:
    """Where the run's benchmark files are: AuditoryBench (located, downloaded if needed) or the synthetic one."""
    if cfg.benchmark == "synthetic":
        return str(synthetic.ensure_benchmark(cfg.synthetic))
    if cfg.benchmark == "glue":
        return glue.locate(cfg.data.data_dir, cfg.data.tasks)
    return auditorybench.locate(cfg.data.data_dir)


def ingest_auditorybench(cfg: RunConfig) -> dict:
    """Reads all four splits of the chosen tasks (later stages pick `data.splits` from them)."""
    layout = layout_for(cfg)
    key = ingest_key(cfg)
    if (report := reuse_or_clear(layout, run_files.INGEST, key)) is not None:
        return report
    started = time.perf_counter()
    source = data_source(cfg)
    if cfg.benchmark == "glue":
        result = glue.ingest(source, cfg.data.tasks, cfg.data.splits)
        for counts in result.counts.values():  # GLUE rows carry no flags (AuditoryBench's data notes)
            counts.setdefault("flags_by_reason", {})
        layout.write_table(result.glue, *run_files.GLUE_ROWS)
        # The span detector's training rows: AuditoryBench's gold spans (GLUE has none).
        span_rows = auditorybench.ingest(auditorybench.locate(None), auditorybench.TASKS, ("train", "dev"))
        layout.write_table(span_rows.examples, *run_files.SPAN_TRAINING)
    else:
        result = auditorybench.ingest(source, cfg.data.tasks, auditorybench.SPLITS)
    layout.write_table(result.examples, *run_files.EXAMPLES)
    layout.write_table(result.rejects, *run_files.REJECTS)
    layout.write_json(result.provenance, *run_files.PROVENANCE)
    rejects_by_reason: dict[str, int] = {}
    flags_by_reason: dict[str, int] = {}
    for counts in result.counts.values():
        for reason, n in counts["rejects_by_reason"].items():
            rejects_by_reason[reason] = rejects_by_reason.get(reason, 0) + n
        for reason, n in counts["flags_by_reason"].items():
            flags_by_reason[reason] = flags_by_reason.get(reason, 0) + n
    report = {
        "benchmark": cfg.benchmark,
        "source": source,
        "rows_in": sum(c["rows_in"] for c in result.counts.values()),
        "accepted": result.examples.num_rows,
        "rejected": result.rejects.num_rows,
        "rejects_by_reason": rejects_by_reason,
        "flags_by_reason": flags_by_reason,
        "per_split": result.counts,
        "seconds": round(time.perf_counter() - started, 3),
        "outputs": {parts[-1]: layout.url(*parts) for parts in (run_files.EXAMPLES, run_files.REJECTS)},
    }
    layout.mark_done(run_files.INGEST, key, report)
    return {**report, "cached": False}


def examples_of(layout: RunLayout, cfg: RunConfig, splits) -> list[dict]:
    table = layout.read_table(*run_files.EXAMPLES)
    mask = pc.and_(pc.is_in(table["task"], pa.array(cfg.data.tasks)), pc.is_in(table["split"], pa.array(splits)))
    return table.filter(mask).select(["example_id", "task", "split", "sentence", "spans"]).to_pylist()


def span_training_rows(layout: RunLayout, cfg: RunConfig, splits) -> list[dict]:
    """The rows the span detector learns from: the run's own, or AuditoryBench's for GLUE (which has no spans)."""
    if cfg.benchmark != "glue":
        return examples_of(layout, cfg, splits)
    table = layout.read_table(*run_files.SPAN_TRAINING)
    table = table.filter(pc.is_in(table["split"], pa.array(splits)))
    return table.select(["example_id", "task", "split", "sentence", "spans"]).to_pylist()


# -- models --------------------------------------------------------------------------------------


def tiny_corpus(cfg: RunConfig) -> list[str]:
    """What the tiny profile's tokenizers are trained on: train sentences, gold spans and answers.

    The answers (and animal options) are in it because the sentences hold [MASK] where the answer
    goes: a real LM's vocabulary knows animal names, and the tiny one should too. The synthetic
    benchmark's made-up source names are left out.
    """
    layout = layout_for(cfg)
    table = layout.read_table(*run_files.EXAMPLES)
    table = table.filter(pc.and_(pc.is_in(table["task"], pa.array(cfg.data.tasks)), pc.equal(table["split"], "train")))
    rows = table.select(["sentence", "spans", "answer", "options"]).to_pylist()
    corpus = (
        [r["sentence"] for r in rows]
        + [s for r in rows for s in r["spans"]]
        + [r["answer"] for r in rows]
        + [o for r in rows for o in (r["options"] or [])]
    )
    if cfg.benchmark == "synthetic":
        # Made-up source names must stay unknown to the LM: a name learnt as a token would let
        # the text-only model memorise the train names' answers.
        corpus = synthetic.without_source_names(corpus, cfg.synthetic)
    if cfg.benchmark == "glue":
        # The span detector learns on AuditoryBench's sentences: their words and spans too.
        spans = layout.read_table(*run_files.SPAN_TRAINING)
        spans = spans.filter(pc.equal(spans["split"], "train")).select(["sentence", "spans"]).to_pylist()
        corpus += [r["sentence"] for r in spans] + [s for r in spans for s in r["spans"]]
    return corpus


def prepare_models(cfg: RunConfig) -> dict[str, str]:
    """Role -> local model folder; builds the tiny profile once, finds the paper checkpoints.

    The paper profile looks only for the roles the run's systems need (`fusion_stage.
    required_roles`: a text-only table needs no generator). With `imagine.generator=tone` the
    generator is the synthetic benchmark's tone table and Stable Audio is not looked for.
    What was found is recorded in the run's models.json (`model_lock.run_models`: revisions, identities,
    lock state), and every difference from the lock or from an earlier run of this run id is a WARNING.
    """
    corpus = tiny_corpus(cfg) if cfg.profile == "tiny" else None
    tone = cfg.imagine.generator == "tone"
    if tone and cfg.benchmark != "synthetic":
        raise ConfigError(
            "imagine.generator=tone renders the hidden tones of the synthetic benchmark's sources and "
            f"has nothing to render for {cfg.benchmark}; use --benchmark synthetic or "
            "imagine.generator=stable-audio"
        )
    needed = required_roles(cfg)
    skip = tuple(r for r in profiles.ROLES if r not in needed or (r == "generator" and tone))
    # imagine.generator=audioldm2 fills the generator role with AudioLDM2 (tiny: its own tiny build;
    # paper: cvssp/audioldm2), recorded and locked under that checkpoint's name.
    paths = profiles.resolve_models(
        cfg.profile,
        cfg.model_dir,
        corpus=corpus,
        skip_roles=skip,
        rehearsal=cfg.rehearsal,
        generator=cfg.imagine.generator,
    )
    checkpoints = {"generator": profiles.generator_checkpoint(cfg.imagine.generator)}
    record = model_lock.run_models(cfg.profile, paths, cfg.model_dir, checkpoints)
    if tone and "generator" in needed:
        paths["generator"] = synthetic.tone_generator_dir(cfg.synthetic)
        record["models"]["generator"] = model_lock.folder_record(paths["generator"])
    if cfg.benchmark == "synthetic" and cfg.synthetic.scorer == "planted" and "clap" in needed:
        # The planted scorer fills the clap role; its folder's identity keys the stored scores.
        paths["clap"] = synthetic.planted_scorer_dir(cfg.synthetic)
        record["models"]["clap"] = model_lock.folder_record(paths["clap"])
    _record_models(cfg, record)
    return {role: str(path) for role, path in paths.items()}


def _record_models(cfg: RunConfig, record: dict) -> None:
    """Writes the run's models.json, after saying (a WARNING per role) where its models differ from the
    model home's lock or from what an earlier run of this run id recorded: before any stage loads one."""
    layout = layout_for(cfg)
    earlier = layout.read_json(*run_files.MODELS) if layout.exists(*run_files.MODELS) else None
    record["changes"] = model_lock.model_changes(record, earlier)
    for line in record["changes"]:
        logger.warning("run %s: model differs: %s", cfg.effective_run_id, line)
    layout.write_json(record, *run_files.MODELS)
