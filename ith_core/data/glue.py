"""GLUE ingestion (`--benchmark glue`): read a local GLUE folder, check every row, one table out.

GLUE is never downloaded here. It comes from the GLUE benchmark site
(https://gluebenchmark.com/tasks), the classic `download_glue_data.py` script, or the Hugging
Face dataset `nyu-mll/glue` exported to TSV in the same layout; `ith data fetch --glue DIR`
copies such a folder into the verified home `$ITH_HOME/data/glue` (`home_dir()`).

    from ith_core.data import glue
    result = glue.ingest(glue.locate(), ("sst2", "mrpc"), ("train", "dev"))
    result.examples, result.rejects, result.glue, result.provenance, result.counts

The layout (`TASKS`; test labels are not public, so the splits are train and dev):
- `SST-2/{train,dev}.tsv`: `sentence, label` (0/1)
- `QNLI/{train,dev}.tsv`: `index, question, sentence, label` (entailment/not_entailment)
- `QQP/{train,dev}.tsv`: `id, qid1, qid2, question1, question2, is_duplicate` (0/1)
- `MNLI/train.tsv`, `dev_matched.tsv` (split `dev`), `dev_mismatched.tsv` (copied by `fetch`,
  not read): `sentence1, sentence2, gold_label` among others (contradiction/entailment/neutral)
- `MRPC/{train,dev}.tsv`: `Quality, #1 ID, #2 ID, #1 String, #2 String` (0/1)
- `STS-B/{train,dev}.tsv`: `sentence1, sentence2, score` among others (a float in [0, 5])
- `CoLA/{train,dev}.tsv`: no header, `source, label, author_label, sentence` (0/1)
Files are UTF-8 (a BOM is dropped), one row per line, fields split at every tab with no quoting
(csv.QUOTE_NONE: quotes are literal characters). Columns are found by header name; extra columns
are ignored. Blank lines are skipped and get no row number. A missing file, undecodable text or a
header without a needed column is a broken file: every file is read first, then one
`GlueDataError` names each broken one.

Rows. `row` is the 1-based data row (header excluded); `example_id` is `f"{task}/{split}/{row:06d}"`
(the report reads the task before the first `/`, as for AuditoryBench). Sentences are stripped;
a pair is kept in `sentence` as `join_pair(s1, s2)` (`PAIR_SEPARATOR`, a newline, which no TSV
field can hold) and `split_pair` gives it back. `answer` is the label as text (the class name, or
the STS-B score as written); `glue.label` is the class id (the index in the task's `labels`) or
the score. A row is rejected with the FIRST failing reason, in this order:
1. `wrong_field_count`: the row's field count differs from the header's (CoLA: 4).
2. `empty_sentence`: a sentence column is empty after stripping.
3. `label_not_in_label_set`: the stripped label is not one of the task's labels.
4. `score_not_a_number` / `score_out_of_range` (STS-B): not a finite float / not in [0, 5].
5. `duplicate_id`: the row's id column (QNLI, MNLI, STS-B `index`; QQP `id`) repeats an
   earlier row's in the same file.
A reject's `raw` is the line as read. Every file obeys rows_read == accepted + rejected.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import fsspec
import pyarrow as pa

from ith_core.config import GLUE_SPLITS, GLUE_TASKS, require
from ith_core.data.auditorybench import EXAMPLES_SCHEMA, REJECTS_SCHEMA, DataError, problems_message
from storage.layout import ith_home

logger = logging.getLogger(__name__)

PAIR_SEPARATOR = "\n"
MANIFEST = "glue.json"

WHERE_GLUE_COMES_FROM = (
    "GLUE is not downloaded by ith: get it from the GLUE benchmark site (https://gluebenchmark.com/tasks), "
    "with the download_glue_data.py script, or as the Hugging Face dataset nyu-mll/glue exported to TSV "
    "in that layout; then `ith data fetch --glue DIR` puts a local copy into the verified home "
    "$ITH_HOME/data/glue"
)

REJECT_REASONS = (
    "wrong_field_count",
    "empty_sentence",
    "label_not_in_label_set",
    "score_not_a_number",
    "score_out_of_range",
    "duplicate_id",
)

STSB_RANGE = (0.0, 5.0)


class GlueDataError(DataError):
    """A GLUE folder or file is missing, broken or no longer matches the home's manifest."""


@dataclass(frozen=True)
class GlueTask:
    """Where one GLUE task's files are and how a row becomes an example."""

    name: str
    folder: str
    # split -> file name inside `folder`.
    files: Mapping[str, str]
    # Columns by header name; for a headerless file (CoLA) `columns` names its fields in order.
    sentence_columns: tuple[str, ...]
    label_column: str
    # Class names in class-id order; None: regression (STS-B).
    labels: tuple[str, ...] | None
    metrics: tuple[str, ...]
    id_column: str | None = None
    columns: tuple[str, ...] | None = None
    # Files copied by `fetch` but not read by `ingest` (MNLI's mismatched dev set).
    extra_files: tuple[str, ...] = ()

    @property
    def has_header(self) -> bool:
        return self.columns is None

    @property
    def is_regression(self) -> bool:
        return self.labels is None

    @property
    def num_labels(self) -> int:
        return 1 if self.labels is None else len(self.labels)

    @property
    def is_pair(self) -> bool:
        return len(self.sentence_columns) == 2

    def path(self, split: str) -> str:
        """The file of `split`, relative to a GLUE folder: `SST-2/dev.tsv`."""
        return f"{self.folder}/{self.files[split]}"

    def all_files(self) -> tuple[str, ...]:
        return tuple(self.files[s] for s in GLUE_SPLITS) + self.extra_files


_TRAIN_DEV = {"train": "train.tsv", "dev": "dev.tsv"}
# Label orders are those of the classic GLUE processors (class id = index), so a head trained
# elsewhere on these files means the same class by the same id.
TASKS: dict[str, GlueTask] = {
    "sst2": GlueTask("sst2", "SST-2", _TRAIN_DEV, ("sentence",), "label", ("0", "1"), ("accuracy",)),
    "qnli": GlueTask(
        "qnli",
        "QNLI",
        _TRAIN_DEV,
        ("question", "sentence"),
        "label",
        ("entailment", "not_entailment"),
        ("accuracy",),
        id_column="index",
    ),
    "qqp": GlueTask(
        "qqp",
        "QQP",
        _TRAIN_DEV,
        ("question1", "question2"),
        "is_duplicate",
        ("0", "1"),
        ("f1", "accuracy"),
        id_column="id",
    ),
    "mnli": GlueTask(
        "mnli",
        "MNLI",
        {"train": "train.tsv", "dev": "dev_matched.tsv"},
        ("sentence1", "sentence2"),
        "gold_label",
        ("contradiction", "entailment", "neutral"),
        ("accuracy",),
        id_column="index",
        extra_files=("dev_mismatched.tsv",),
    ),
    "mrpc": GlueTask("mrpc", "MRPC", _TRAIN_DEV, ("#1 String", "#2 String"), "Quality", ("0", "1"), ("f1", "accuracy")),
    "stsb": GlueTask(
        "stsb",
        "STS-B",
        _TRAIN_DEV,
        ("sentence1", "sentence2"),
        "score",
        None,
        ("pearson", "spearman"),
        id_column="index",
    ),
    "cola": GlueTask(
        "cola",
        "CoLA",
        _TRAIN_DEV,
        ("sentence",),
        "label",
        ("0", "1"),
        ("matthews",),
        columns=("source", "label", "author_label", "sentence"),
    ),
}
if tuple(TASKS) != GLUE_TASKS:  # one list of task names: the config's
    raise RuntimeError(f"glue.TASKS {tuple(TASKS)} must follow ith_core.config.GLUE_TASKS {GLUE_TASKS}")

GLUE_SCHEMA = pa.schema(
    [
        pa.field("example_id", pa.string(), nullable=False),
        pa.field("task", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("row", pa.int32(), nullable=False),
        pa.field("sentence1", pa.string(), nullable=False),
        pa.field("sentence2", pa.string()),
        pa.field("label", pa.float64(), nullable=False),
        pa.field("label_text", pa.string(), nullable=False),
    ]
)


@dataclass
class GlueIngest:
    """What `ingest` returns: examples and rejects in AuditoryBench's schemas, the GLUE table, provenance, counts."""

    examples: pa.Table
    rejects: pa.Table
    glue: pa.Table
    # One dict per file: task, split, file, path, sha256, bytes, rows_read, rows_accepted, rows_rejected.
    provenance: list[dict] = field(default_factory=list)
    # "task/split" -> rows_in, accepted, rejected, rejects_by_reason{} (zeros included), labels{}.
    counts: dict[str, dict] = field(default_factory=dict)


def join_pair(sentence1: str, sentence2: str | None) -> str:
    """One `sentence` for a pair: `s1 + PAIR_SEPARATOR + s2`; a single sentence is itself."""
    for text in (sentence1, sentence2):
        if text is not None and PAIR_SEPARATOR in text:
            raise ValueError(f"a GLUE sentence must not contain the pair separator {PAIR_SEPARATOR!r}: {text!r}")
    return sentence1 if sentence2 is None else f"{sentence1}{PAIR_SEPARATOR}{sentence2}"


def split_pair(sentence: str) -> tuple[str, str | None]:
    """The inverse of `join_pair`: (s1, s2), or (sentence, None) for a single sentence."""
    first, sep, second = sentence.partition(PAIR_SEPARATOR)
    return (first, second) if sep else (sentence, None)


def home_dir() -> str:
    """The verified home of the GLUE copy: `$ITH_HOME/data/glue` (ITH_HOME: ~/.cache/ith)."""
    return str(ith_home() / "data" / "glue")


def _task_names(tasks: Iterable[str] | str) -> tuple[str, ...]:
    names = (tasks,) if isinstance(tasks, str) else tuple(tasks)
    require(len(names) > 0, "tasks", "name at least one GLUE task", names, f"known: {', '.join(GLUE_TASKS)}")
    for name in names:
        require(name in TASKS, "tasks", f"contain only GLUE tasks ({', '.join(GLUE_TASKS)})", name)
    return tuple(t for t in GLUE_TASKS if t in names)


def _split_names(splits: Iterable[str] | str) -> tuple[str, ...]:
    names = (splits,) if isinstance(splits, str) else tuple(splits)
    require(len(names) > 0, "splits", "name at least one GLUE split", names, f"known: {', '.join(GLUE_SPLITS)}")
    for name in names:
        require(name in GLUE_SPLITS, "splits", f"contain only GLUE splits ({', '.join(GLUE_SPLITS)})", name)
    return tuple(s for s in GLUE_SPLITS if s in names)


# ---------------------------------------------------------------------------------------------
# reading


def _read(url: str) -> bytes:
    try:
        with fsspec.open(url, "rb") as handle:
            return handle.read()
    except FileNotFoundError as exc:
        raise GlueDataError(f"{url}: GLUE file not found. {WHERE_GLUE_COMES_FROM}") from exc


def _lines(url: str, data: bytes) -> list[str]:
    """The file's non-blank lines, line ends removed (fields may hold any other character)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise GlueDataError(f"{url}: not UTF-8 text ({exc})") from exc
    # Split at "\n" only: str.splitlines would also split at \x0b, \x1c, \u2028..., which GLUE's
    # crawled text can hold inside a field.
    return [line for line in (raw.removesuffix("\r") for raw in text.split("\n")) if line.strip()]


def _header(task: GlueTask, url: str, lines: list[str]) -> tuple[tuple[str, ...], list[str]]:
    """(column names, data lines); a missing needed column is a broken file."""
    if not task.has_header:
        return task.columns, lines
    if not lines:
        raise GlueDataError(f"{url}: empty file, expected a header row")
    header = tuple(name.strip() for name in lines[0].split("\t"))
    needed = (*task.sentence_columns, task.label_column) + ((task.id_column,) if task.id_column else ())
    missing = [repr(n) for n in needed if n not in header]
    if missing:
        raise GlueDataError(
            f"{url}: missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
            f"(task {task.name!r}); header is {list(header)}"
        )
    return header, lines[1:]


def _check_row(task: GlueTask, header, fields: list[str], seen_ids: set[str]):
    """(reason, detail) of the first failing rule, else (sentences, label id or score, label text)."""
    if len(fields) != len(header):
        return ("wrong_field_count", f"row: expected {len(header)} tab-separated fields, found {len(fields)}"), None
    value = dict(zip(header, fields))
    sentences = [value[c].strip() for c in task.sentence_columns]
    for column, text in zip(task.sentence_columns, sentences):
        if not text:
            return ("empty_sentence", f"{column}: must not be empty"), None
    label_text = value[task.label_column].strip()
    if task.labels is not None:
        if label_text not in task.labels:
            detail = f"{task.label_column}: must be one of {', '.join(task.labels)}, got {value[task.label_column]!r}"
            return ("label_not_in_label_set", detail), None
        label = float(task.labels.index(label_text))
    else:
        try:
            label = float(label_text)
        except ValueError:
            label = math.nan
        if not math.isfinite(label):
            detail = f"{task.label_column}: must be a number, got {value[task.label_column]!r}"
            return ("score_not_a_number", detail), None
        low, high = STSB_RANGE
        if not low <= label <= high:
            return (
                "score_out_of_range",
                f"{task.label_column}: must be in [{low:g}, {high:g}], got {label_text}",
            ), None
    if task.id_column is not None:
        row_id = value[task.id_column].strip()
        if row_id in seen_ids:
            return ("duplicate_id", f"{task.id_column}: {row_id!r} repeats an earlier row's"), None
        seen_ids.add(row_id)
    return None, (sentences, label, label_text)


def ingest(folder: str, tasks: Iterable[str] = GLUE_TASKS, splits: Iterable[str] = GLUE_SPLITS) -> GlueIngest:
    """Read, check and normalise the chosen tasks and splits of the GLUE folder (rules: module docstring)."""
    names = _task_names(tasks)
    split_names = _split_names(splits)
    root = str(folder).rstrip("/")
    _require_folder(root)
    ex = {name: [] for name in EXAMPLES_SCHEMA.names}
    rj = {name: [] for name in REJECTS_SCHEMA.names}
    gl = {name: [] for name in GLUE_SCHEMA.names}
    provenance, counts, problems = [], {}, []
    for name in names:
        for split in split_names:
            try:
                prov, count = _ingest_file(TASKS[name], split, root, ex, rj, gl)
            except GlueDataError as exc:  # read every file, then fail once naming them all
                problems.append(str(exc))
                continue
            provenance.append(prov)
            counts[f"{name}/{split}"] = count
            logger.info(
                "glue %s/%s: %d rows, %d accepted, %d rejected %s",
                name,
                split,
                count["rows_in"],
                count["accepted"],
                count["rejected"],
                {k: v for k, v in count["rejects_by_reason"].items() if v},
            )
    if problems:
        raise GlueDataError(problems_message(problems, len(names) * len(split_names), "GLUE files cannot be used"))
    return GlueIngest(
        examples=pa.Table.from_pydict(ex, schema=EXAMPLES_SCHEMA),
        rejects=pa.Table.from_pydict(rj, schema=REJECTS_SCHEMA),
        glue=pa.Table.from_pydict(gl, schema=GLUE_SCHEMA),
        provenance=provenance,
        counts=counts,
    )


def _ingest_file(task: GlueTask, split: str, root: str, ex: dict, rj: dict, gl: dict) -> tuple[dict, dict]:
    relative = task.path(split)
    url = f"{root}/{relative}"
    data = _read(url)
    sha256, size = hashlib.sha256(data).hexdigest(), len(data)
    header, lines = _header(task, url, _lines(url, data))
    del data  # MNLI's train file is hundreds of MB: keep only its lines
    rejects_by_reason = dict.fromkeys(REJECT_REASONS, 0)
    labels = dict.fromkeys(task.labels, 0) if task.labels else {}
    seen_ids: set[str] = set()
    accepted = 0
    for row, line in enumerate(lines, start=1):
        example_id = f"{task.name}/{split}/{row:06d}"
        rejected, good = _check_row(task, header, line.split("\t"), seen_ids)
        if rejected is not None:
            reason, detail = rejected
            rejects_by_reason[reason] += 1
            for key, value in zip(
                REJECTS_SCHEMA.names, (example_id, task.name, split, row, reason, detail, line), strict=True
            ):
                rj[key].append(value)
            continue
        sentences, label, label_text = good
        sentence1, sentence2 = sentences[0], (sentences[1] if task.is_pair else None)
        accepted += 1
        if task.labels:
            labels[label_text] += 1
        values = (example_id, task.name, split, row, join_pair(sentence1, sentence2), [], label_text, None, None, [])
        for key, value in zip(EXAMPLES_SCHEMA.names, values, strict=True):
            ex[key].append(value)
        values = (example_id, task.name, split, row, sentence1, sentence2, label, label_text)
        for key, value in zip(GLUE_SCHEMA.names, values, strict=True):
            gl[key].append(value)
    rejected_total = sum(rejects_by_reason.values())
    # Explicit check rather than `assert`, so it also holds under `python -O`.
    if accepted + rejected_total != len(lines):
        raise RuntimeError(f"{url}: {len(lines)} rows read but {accepted} accepted + {rejected_total} rejected")
    provenance = {
        "task": task.name,
        "split": split,
        "file": relative,
        "path": url,
        "sha256": sha256,
        "bytes": size,
        "rows_read": len(lines),
        "rows_accepted": accepted,
        "rows_rejected": rejected_total,
    }
    count = {
        "rows_in": len(lines),
        "accepted": accepted,
        "rejected": rejected_total,
        "rejects_by_reason": rejects_by_reason,
        "labels": labels,
    }
    return provenance, count


# ---------------------------------------------------------------------------------------------
# fetch, locate, content


def _entries(task: GlueTask) -> list[tuple[str, str]]:
    """(split, path relative to a GLUE folder) of every file `fetch` copies for `task`."""
    named = [(split, task.files[split]) for split in GLUE_SPLITS]
    named += [(file_name.removesuffix(".tsv"), file_name) for file_name in task.extra_files]
    return [(split, f"{task.folder}/{file_name}") for split, file_name in named]


def _load_manifest(home: Path) -> dict | None:
    path = home / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise GlueDataError(
            f"{path}: unreadable GLUE manifest ({exc}); put the copy there again with `ith data fetch --glue DIR`"
        ) from exc


def _write_atomic(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    # A temporary name in the same folder, then a rename: `target` only ever exists whole.
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(source_dir: str, home: str | None = None, tasks: Iterable[str] = GLUE_TASKS) -> dict:
    """Copies each task's files from a local GLUE folder into the home, then writes its manifest.

    Every present file is read and its header checked first; a broken one stops the fetch before
    anything is copied (one `GlueDataError` names each). Files go in under a temporary name and are
    renamed; the manifest `glue.json` (per file: task, split, rows, bytes, sha256) is written last,
    merged with what an earlier fetch put there. A file or task missing from the source is
    reported (`status` `missing`, or `kept` when an earlier fetch put it in the home), an error
    only when no file of any task is there. Returns {home, source, files: [{task, split, file,
    rows, sha256, status}], missing_tasks}; status `copied`, `unchanged` (the home already held
    these bytes), `kept` or `missing`.
    """
    names = _task_names(tasks)
    source = str(source_dir).rstrip("/")
    _require_folder(source)
    fs, source_path = fsspec.core.url_to_fs(source)
    target = Path(home).expanduser() if home else Path(home_dir())
    manifest = _load_manifest(target) or {"files": {}}
    found: list[tuple[str, str, str, bytes, int]] = []
    problems: list[str] = []
    files: list[dict] = []
    for name in names:
        task = TASKS[name]
        for split, relative in _entries(task):
            if not fs.isfile(f"{source_path.rstrip('/')}/{relative}"):
                old = manifest["files"].get(relative)
                kept = old is not None and (target / relative).is_file()
                files.append(
                    {
                        "task": name,
                        "split": split,
                        "file": relative,
                        "rows": old["rows"] if kept else None,
                        "sha256": old["sha256"] if kept else None,
                        "status": "kept" if kept else "missing",
                    }
                )
                continue
            url = f"{source}/{relative}"
            data = _read(url)
            try:
                _, lines = _header(task, url, _lines(url, data))
            except GlueDataError as exc:
                problems.append(str(exc))
                continue
            found.append((name, split, relative, data, len(lines)))
    if problems:
        raise GlueDataError(problems_message(problems, len(problems), "GLUE files are broken; nothing was copied"))
    if not found:
        raise GlueDataError(
            f"{source}: no file of the GLUE tasks {', '.join(names)} there (looked for "
            f"{', '.join(rel for n in names for _, rel in _entries(TASKS[n]))}). {WHERE_GLUE_COMES_FROM}"
        )
    for name, split, relative, data, rows in found:
        digest = hashlib.sha256(data).hexdigest()
        dest = target / relative
        if dest.is_file() and _sha256_file(dest) == digest:
            status = "unchanged"
        else:
            _write_atomic(dest, data)
            status = "copied"
        manifest["files"][relative] = {"task": name, "split": split, "rows": rows, "bytes": len(data), "sha256": digest}
        files.append({"task": name, "split": split, "file": relative, "rows": rows, "sha256": digest, "status": status})
        logger.info("glue %s: %s (%d rows, sha256 %s) from %s", relative, status, rows, digest[:12], source)
    manifest["files"] = dict(sorted(manifest["files"].items()))
    # Written last, so a manifest names only files that are whole in the home.
    _write_atomic(target / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())
    present = {name for name, *_ in found}
    order = {relative: i for i, relative in enumerate(rel for n in GLUE_TASKS for _, rel in _entries(TASKS[n]))}
    files.sort(key=lambda entry: order[entry["file"]])
    return {
        "home": str(target),
        "source": source,
        "files": files,
        "missing_tasks": [name for name in names if name not in present],
    }


def verify_home(home: str | None = None, tasks: Iterable[str] = GLUE_TASKS) -> list[str]:
    """The problems of the home's copy of `tasks` (train and dev files): [] when every file verifies."""
    names = _task_names(tasks)
    target = Path(home).expanduser() if home else Path(home_dir())
    manifest = _load_manifest(target)
    again = "put it there again with `ith data fetch --glue DIR`"
    if manifest is None:
        return [f"{target}: no GLUE copy in the home (no {MANIFEST}). {WHERE_GLUE_COMES_FROM}"]
    problems = []
    for name in names:
        for split in GLUE_SPLITS:
            relative = TASKS[name].path(split)
            entry = manifest["files"].get(relative)
            path = target / relative
            if entry is None:
                problems.append(
                    f"{path}: task {name!r}, split {split!r} was never fetched into the home; put it there with `ith data fetch --glue DIR`"
                )
            elif not path.is_file():
                problems.append(f"{path}: listed in {MANIFEST} but missing; {again}")
            else:
                digest = _sha256_file(path)
                if digest != entry["sha256"]:
                    problems.append(
                        f"{path}: sha256 is {digest}, {MANIFEST} says {entry['sha256']}: the file changed "
                        f"since it was fetched; {again}"
                    )
    return problems


def locate(data_dir: str | None = None, tasks: Iterable[str] = GLUE_TASKS) -> str:
    """The GLUE folder to read: `data_dir` when given (it must exist), else the verified home."""
    if data_dir:
        root = str(data_dir).rstrip("/")
        _require_folder(root)
        return root
    problems = verify_home(None, tasks)
    if problems:
        raise GlueDataError(problems_message(problems, len(problems), "GLUE files of the home cannot be used"))
    return home_dir()


def content_id(folder: str, tasks: Iterable[str] = GLUE_TASKS, splits: Iterable[str] = GLUE_SPLITS) -> str:
    """`sha256:<hash>` over the sha256 of each file a run reads (a missing file counts as `missing`).

    It enters the run id: the same bytes from two places give the same run.
    """
    root = str(folder).rstrip("/")
    lines = []
    for name in _task_names(tasks):
        for split in _split_names(splits):
            relative = TASKS[name].path(split)
            try:
                digest = hashlib.sha256(_read(f"{root}/{relative}")).hexdigest()
            except GlueDataError:
                digest = "missing"
            lines.append(f"{relative}:{digest}")
    return "sha256:" + hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _require_folder(root: str) -> None:
    fs, path = fsspec.core.url_to_fs(root)
    if not fs.isdir(path):
        raise GlueDataError(f"{root}: no GLUE folder there. {WHERE_GLUE_COMES_FROM}")
