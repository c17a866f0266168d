"""The run folder's names: every stage folder, every file the stages write there, and the
Parquet schemas of its tables. Stages ask for `run_files.SELECTION`; none spells a path.

A file is a tuple of path parts inside the run folder, to unpack into `RunLayout`:

    layout.read_table(*run_files.SELECTION)                      # imagine/selection.parquet
    layout.write_table(table, *run_files.spans_table("pitch", "dev"))
    layout.url(*run_files.inputs_examples(run_files.FUSION_FEATURES))

Stage folder names are also the stages' names: their keys (`stage_key`), done markers and the
sections of summary.json use them. Files a library writes inside its own folder (the trainer's
job folders, a saved model, the shared audio store, a retrieval pool) are that library's.
"""

from __future__ import annotations

import pyarrow as pa

from storage.layout import DONE_MARKER as DONE_MARKER  # `<stage>/_DONE.json`, written last

# -- the run folder's top level ------------------------------------------------------------------
CONFIG = ("config.json",)  # resolved settings of the run
SUMMARY = ("summary.json",)  # stage -> report
REHEARSAL = ("rehearsal.json",)  # `ith rehearse`: reduced knobs, per-stage costs, unit costs, projection
MODELS = ("models.json",)  # per model role: folder, revision, identity, lock state (prepare-models)
KEY_FILE = "_KEY.json"  # in a stage folder: the key of an attempt in progress (stages that resume)

# -- stage folders, in run order -------------------------------------------------------------------
INGEST = "ingest"
SPAN_DETECTOR = "span_detector"
SPANS = "spans"
IMAGINE = "imagine"
FUSION_EXAMPLES = "fusion_examples"  # text-only systems' inputs
FUSION_FEATURES = "fusion_features"  # imagined audio encoded for the LM
AUDIOBERT_RETRIEVAL = "audiobert_retrieval"
AUDIOBERT_FEATURES = "audiobert_features"  # retrieved audio encoded for the LM
FUSION_TRAIN = "fusion_train"  # one subfolder per (system, seed): train_stage
FUSION_EVAL = "fusion_eval"  # one subfolder per (system, seed): eval_stage
FUSION = "fusion"  # every system's predictions scored together
# (the report, `report/`, is written by ith_core.report: REPORT below)

# -- ingest ----------------------------------------------------------------------------------------
EXAMPLES = (INGEST, "examples.parquet")
REJECTS = (INGEST, "rejects.parquet")
PROVENANCE = (INGEST, "provenance.json")

# -- span detection ------------------------------------------------------------------------------
SPAN_MODEL = (SPAN_DETECTOR, "model")  # a Hugging Face model folder
SPAN_METRICS = (SPAN_DETECTOR, "metrics.json")


def spans_table(task: str, split: str) -> tuple[str, str]:
    """The detected spans of one (task, split) of the sample (SPANS_SCHEMA)."""
    return (SPANS, f"{task}-{split}.parquet")


def sampled_examples(task: str, split: str) -> tuple[str, str]:
    """The sampled example ids of one (task, split) and their span counts (SAMPLE_SCHEMA)."""
    return (SPANS, f"{task}-{split}.examples.parquet")


# -- imagination -------------------------------------------------------------------------------------
PLAN = (IMAGINE, "plan.json")  # settings, shards, model paths: what the shards generate
PLAN_SHARDS = (IMAGINE, "plan.parquet")  # PLAN_SCHEMA: the audio ids of each shard
MAPPING = (IMAGINE, "mapping.parquet")  # MAPPING_SCHEMA: span -> prompt -> audio id
SHARD_STATUS = (IMAGINE, "shards.json")
CANDIDATES = (IMAGINE, "candidates.parquet")  # storage.audio_store.CANDIDATES_SCHEMA
SELECTION = (IMAGINE, "selection.parquet")  # SELECTION_SCHEMA: the chosen candidate of each span
ACCEPTANCE = (IMAGINE, "acceptance.parquet")

# -- system inputs (fusion_examples, fusion_features, audiobert_features) ------------------------------
EXAMPLES_FILE = "examples.parquet"
SELECTION_FILE = "selection.parquet"  # FUSION_SELECTION_SCHEMA
FEATURES_MANIFEST = "features.json"  # storage.features, written last


def inputs_examples(stage: str) -> tuple[str, str]:
    """The examples a system's inputs stage hands to training and evaluation."""
    return (stage, EXAMPLES_FILE)


def inputs_selection(stage: str) -> tuple[str, str]:
    """The span -> audio selection a system's inputs stage encoded (FUSION_SELECTION_SCHEMA)."""
    return (stage, SELECTION_FILE)


def features_manifest(stage: str) -> tuple[str, str]:
    return (stage, FEATURES_MANIFEST)


# -- AudioBERT retrieval ----------------------------------------------------------------------------
RETRIEVAL = (AUDIOBERT_RETRIEVAL, "retrieval.parquet")  # RETRIEVAL_SCHEMA
RETRIEVAL_SELECTION = (AUDIOBERT_RETRIEVAL, SELECTION_FILE)  # FUSION_SELECTION_SCHEMA
POOL_MANIFEST = (AUDIOBERT_RETRIEVAL, "pool_manifest.parquet")
POOL_REJECTS = (AUDIOBERT_RETRIEVAL, "pool_rejects.parquet")
POOL_INFO = (AUDIOBERT_RETRIEVAL, "pool.json")

# -- fusion: training, evaluation, the table -------------------------------------------------------
TRAIN_SPEC = "spec.json"  # in a train stage folder: the spec the trainer runs
TRAIN_LOG = "train.log"  # in a train stage folder: the trainer's output
PREDICTIONS_FILE = "predictions.parquet"  # PREDICTION_SCHEMA


def train_stage(system: str, seed: int) -> str:
    """The folder (and stage name) of one training job set: `fusion_train/<system>-seed<seed>`."""
    return f"{FUSION_TRAIN}/{system}-seed{seed}"


def eval_stage(system: str, seed: int, trained: bool) -> str:
    """The folder of one evaluation; a zero-shot system is evaluated once, so without a seed."""
    return f"{FUSION_EVAL}/{system}-seed{seed}" if trained else f"{FUSION_EVAL}/{system}"


def predictions(stage: str) -> tuple[str, str]:
    return (stage, PREDICTIONS_FILE)


RESULTS = (FUSION, "results.json")
RESULTS_TABLE = (FUSION, "results.parquet")
ALL_PREDICTIONS = (FUSION, PREDICTIONS_FILE)

# -- GLUE (`--benchmark glue`) -------------------------------------------------------------------------
# The ingest stage keeps GLUE's rows in EXAMPLES (sentence: the pair joined by "\n", answer: the label)
# for the span, imagine and encode stages, and these beside them:
GLUE_ROWS = (INGEST, "glue.parquet")  # sentence1, sentence2, label (float: class id or STS-B score)
SPAN_TRAINING = (INGEST, "span_training.parquet")  # AuditoryBench's rows: the span detector learns from them
GLUE_TRAIN = "glue_train"  # one subfolder per (task, system, seed)
GLUE = "glue"  # every job's predictions scored together
GLUE_RESULTS = (GLUE, "results.json")
GLUE_PREDICTIONS = (GLUE, PREDICTIONS_FILE)  # GLUE_PREDICTION_SCHEMA


def glue_stage(task: str, system: str, seed: int) -> str:
    """The folder (and stage name) of one GLUE fine-tuning and its dev predictions."""
    return f"{GLUE_TRAIN}/{task}-{system}-seed{seed}"


# -- the report ----------------------------------------------------------------------------------------
REPORT = "report"
REPORT_HTML = (REPORT, "report.html")
REPORT_MD = (REPORT, "report.md")

# -- schemas -----------------------------------------------------------------------------------------
SPANS_SCHEMA = pa.schema(
    [
        ("example_id", pa.string()),
        ("task", pa.string()),
        ("split", pa.string()),
        ("span_index", pa.int32()),
        ("span_text", pa.string()),
        ("char_start", pa.int32()),
        ("char_end", pa.int32()),
        ("score", pa.float32()),
    ]
)

SAMPLE_SCHEMA = pa.schema(
    [
        ("example_id", pa.string()),
        ("task", pa.string()),
        ("split", pa.string()),
        ("n_spans", pa.int32()),
    ]
)

MAPPING_SCHEMA = pa.schema(
    [
        ("example_id", pa.string()),
        ("task", pa.string()),
        ("split", pa.string()),
        ("span_index", pa.int32()),  # -1: the example had no span and uses the fallback prompt
        ("span_text", pa.string()),
        ("prompt", pa.string()),
        ("clap_text", pa.string()),
        ("audio_id", pa.string()),
    ]
)

PLAN_SCHEMA = pa.schema(
    [
        ("shard", pa.string()),
        ("shard_index", pa.int32()),
        ("audio_id", pa.string()),
        ("prompt", pa.string()),
        ("clap_text", pa.string()),
        ("stop_threshold", pa.float64()),  # lazy: stop at the first candidate >= this; null: all candidates
        ("keep_thresholds", pa.list_(pa.float64())),  # keep_audio=selected: store the first passing of each; null: all
    ]
)

SELECTION_SCHEMA = pa.schema(
    [
        ("example_id", pa.string()),
        ("task", pa.string()),
        ("split", pa.string()),
        ("span_index", pa.int32()),
        ("span_text", pa.string()),
        ("audio_id", pa.string()),
        ("threshold", pa.float32()),
        ("candidate", pa.int32()),  # -1: no candidate passed; the LM gets no fusion for this span
        ("clap_score", pa.float32()),
        ("audio_path", pa.string()),
        ("accepted", pa.bool_()),
    ]
)

# The adapted selection table: exactly the columns `audio_encoding.read_selection` requires.
# A span occurrence as the systems' input tables key it (64-bit positions, unlike the spans tables).
SPAN_OCCURRENCE_FIELDS = [
    ("example_id", pa.string()),
    ("task", pa.string()),
    ("split", pa.string()),
    ("span_index", pa.int64()),
    ("span_text", pa.string()),
    ("char_start", pa.int64()),
    ("char_end", pa.int64()),
]

FUSION_SELECTION_SCHEMA = pa.schema(
    [
        *SPAN_OCCURRENCE_FIELDS,
        ("audio_id", pa.string()),  # "<imagine audio id>-c<candidate>": the chosen waveform, not the prompt
        ("audio_path", pa.string()),
        ("sample_rate", pa.int64()),
    ]
)

RETRIEVAL_SCHEMA = pa.schema(
    [
        *SPAN_OCCURRENCE_FIELDS,
        ("query", pa.string()),
        ("clip_ids", pa.list_(pa.string())),  # best first; empty: the policy left no clip
        ("scores", pa.list_(pa.float32())),
        ("allowed_clips", pa.int64()),  # clips of the pool the policy let this row retrieve
    ]
)

PREDICTION_SCHEMA = pa.schema(
    [
        ("example_id", pa.string()),
        ("task", pa.string()),
        ("split", pa.string()),
        ("model", pa.string()),
        ("seed", pa.int64()),
        ("prediction", pa.string()),
        ("gold", pa.string()),
        ("correct", pa.bool_()),
        ("mc_prediction", pa.string()),
        ("mc_correct", pa.bool_()),
        ("spans_used", pa.list_(pa.string())),
        ("audio_ids", pa.list_(pa.string())),
    ]
)

GLUE_PREDICTION_SCHEMA = pa.schema(
    [
        ("example_id", pa.string()),
        ("task", pa.string()),
        ("split", pa.string()),
        ("system", pa.string()),
        ("seed", pa.int64()),
        ("label", pa.float64()),  # the class id, or STS-B's score
        ("prediction", pa.float64()),  # the predicted class id, or the predicted score
        ("spans_fused", pa.int64()),  # spans whose imagined audio the model heard (0 for bert)
    ]
)
