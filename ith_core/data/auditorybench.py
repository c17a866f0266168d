"""AuditoryBench ingestion: find the benchmark files, check them, and turn them into one table.

AuditoryBench (HJ-Ok/AudioBERT) has two tasks, `animal` (animal sound recognition) and `pitch`
(sound pitch comparison), each with train/dev/test/wiki CSV files. This module reads the v2 files
(`<task dir>/<split>.csv`, task dirs `animal_sound_recognition` and `sound_pitch_comparison`),
validates every row and returns the accepted rows as `EXAMPLES_SCHEMA`, the rejected ones as
`REJECTS_SCHEMA`, per-file provenance and per-(task, split) counts.

    from ith_core.data.auditorybench import locate, ingest
    result = ingest(locate())             # or ingest("/path/to/auditorybench"), ingest("memory://x")
    result.examples, result.rejects, result.provenance, result.counts

Finding the files (`locate`), in this order:
1. an explicit `data_dir` (directory or fsspec URL; `ith run --data-dir`, the flow parameter);
2. `$ITH_AUDITORYBENCH_DIR`;
3. the verified home `$ITH_HOME/data/auditorybench` (`~/.cache/ith/data/auditorybench` without
   ITH_HOME; `home_dir()`), when each of the eight pinned files (`PINNED_FILES`) is there and
   matches its sha256;
4. else the missing or damaged files are downloaded into the home, each verified before it is kept.
1 and 2 may hold a local or modified copy (ingestion records `verified_by: local`); the home only
ever holds the pinned files. `fetch(source)` fills the home from a local copy or URL instead of the
network (`ith data fetch --from DIR`, what `make run` does with the copy beside the checkout), with
the same check. A file that fails it is not kept; every file is tried, then one `DataError` names
each failed file, where it came from, and what was expected and found. Files are written under a
temporary name and renamed, so a file in the home is always a whole, verified one; they are
verified again on every call (a few ms).
Upstream URLs come from `https://raw.githubusercontent.com/HJ-Ok/AudioBERT/{commit}/{path}`, or
from the template in `$ITH_AUDITORYBENCH_UPSTREAM` (any fsspec URL with `{commit}` and `{path}`).
Reading https URLs through fsspec needs `aiohttp`.

What the files are (`content_id`): `pinned` when every file a run reads is the pinned one, wherever
it was read from, else `sha256:` and a hash of the files' hashes. A run's id depends on this, not
on where the files were found, so the same verified bytes from two places give the same run.

Normalisation (both tasks share one schema, upstream column differences do not leak):
- `example_id` is `f"{task}/{split}/{row:05d}"`, `row` the 1-based data row (header excluded),
  the numbering the data README uses. Rejected rows keep their id in the rejects table.
- `sentence` is stripped. `spans`: animal `[description]` (the column is `span` in train,
  `description` elsewhere), pitch `[span1, span2]` (columns are read by name, so the wiki file's
  order `span1, span2, sentence, answer` does not matter); each span is stripped and an empty one
  is left out. `answer`: animal the stripped `animal` column, pitch the stripped, lower-cased
  `answer`. `options` (`[A, B, C, D]`, stripped) and `answer_letter` (stripped `Answer`) are null
  for pitch. Blank lines are skipped and get no row number (the benchmark files have none).
- A missing file, a missing column, a header naming both `span` and `description`, text that is
  not UTF-8, or a row whose field count differs from the header's is a broken file, not a bad row.
  Every file is read first; then one `DataError` names every broken file and its problems (every
  missing column; the rows, up to five, whose field count is wrong). Extra columns are ignored.

Row rules. Checked in this order; a row is rejected with the FIRST failing reason:
1. `empty_sentence`: the sentence is empty after stripping.
2. `no_mask`: the sentence has no `[MASK]` (exact, case-sensitive token).
3. `multiple_masks`: the sentence has more than one `[MASK]` (the method fills exactly one).
4. `empty_answer` (animal): the `animal` column is empty after stripping.
5. `invalid_answer_letter` (animal): `Answer`, stripped, is not one of `A`, `B`, `C`, `D`.
6. `answer_not_higher_lower` (pitch): `answer`, stripped and lower-cased, is not `higher`/`lower`
   (an empty pitch answer lands here too).
Accepted rows may carry flags, in this order (each at most once per row):
- `empty_span`: a span cell is empty or whitespace only; it is left out of `spans`.
- `span_not_in_sentence`: a non-empty span does not occur in the sentence (case-insensitive,
  whitespace runs collapsed). The method gives such a span no label and counts it.
- `answer_letter_mismatch` (animal): the option that `Answer` points to differs from `animal`
  (compared as above). `animal` stays the gold answer; the letter is kept as upstream wrote it.
- `animal_not_in_options` (animal): `animal` equals none of the four options (compared as above).
- `duplicate_row`: the row repeats, field for field, an earlier row of the same file. It is kept
  because the published numbers count it; each repeat is flagged, the first occurrence is not,
  so a row present three times gives two flags.
- `normalised_duplicate_row`: the row is not an exact repeat, but every field equals the same
  field of an earlier row of the same file after normalisation: `" ".join(field.split())
  .casefold()`, i.e. leading and trailing whitespace removed, every run of whitespace (spaces,
  tabs, newlines) made one space, then Unicode case folding. So `Higher` / `higher` or
  `A dog  barks.` / `a dog barks.` match; punctuation, accents and `[MASK]` placement still
  count. Kept and flagged like `duplicate_row` (first occurrence unflagged, each later one flagged).
A reject's `detail` names the field and the rule (e.g. "sentence: must contain [MASK] once,
found 2") and not the file, so the rejects table does not depend on where the data was read;
`raw` is the row as read, a JSON object keyed by the file's own column names.

`counts["task/split"]` holds rows_in, accepted, rejected, rejects_by_reason and flags_by_reason
(every reason listed, zeros included); rows_in == accepted + rejected is checked for every file.
Provenance (one dict per file) records the URL read, sha256, bytes, rows, git blob id and
`verified_by`: `sha256` (the bytes are the pinned file) or `local` (a local or modified copy). It
is computed from the bytes actually ingested, whatever `locate` did.

One module because finding, fetching and reading the files check bytes against the same pinned
table (`PINNED_FILES`: `fetch` and `folder_status` through `_verification_problem`, `content_id`
by its sha256 values, `ingest` as `verified_by`) and fail through one `DataError` naming every
bad file; this docstring, the data contract, is nearly 90 of its lines.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import fsspec
import pyarrow as pa

from ith_core.config import SPLITS, TASKS, require
from storage.layout import ith_home

logger = logging.getLogger(__name__)

UPSTREAM_REPO = "HJ-Ok/AudioBERT"
DEFAULT_UPSTREAM_TEMPLATE = f"https://raw.githubusercontent.com/{UPSTREAM_REPO}/{{commit}}/{{path}}"
UPSTREAM_ENV = "ITH_AUDITORYBENCH_UPSTREAM"
DATA_DIR_ENV = "ITH_AUDITORYBENCH_DIR"

TASK_DIRS = {"animal": "animal_sound_recognition", "pitch": "sound_pitch_comparison"}
MASK = "[MASK]"

REJECT_REASONS = (
    "empty_sentence",
    "no_mask",
    "multiple_masks",
    "empty_answer",
    "invalid_answer_letter",
    "answer_not_higher_lower",
)
FLAG_REASONS = (
    "empty_span",
    "span_not_in_sentence",
    "answer_letter_mismatch",
    "animal_not_in_options",
    "duplicate_row",
    "normalised_duplicate_row",
)

_ANIMAL_COLUMNS = ("animal", "span", "sentence", "A", "B", "C", "D", "Answer")
_ANIMAL_COLUMNS_DESC = ("animal", "description", "sentence", "A", "B", "C", "D", "Answer")
_PITCH_COLUMNS = ("sentence", "answer", "span1", "span2")
_PITCH_WIKI_COLUMNS = ("span1", "span2", "sentence", "answer")
_LETTERS = ("A", "B", "C", "D")
_PITCH_ANSWERS = ("higher", "lower")


class DataError(ValueError):
    """A benchmark file is missing, broken or failed verification; the message names the file."""


@dataclass(frozen=True)
class UpstreamFile:
    """One pinned upstream file: where it lives in HJ-Ok/AudioBERT and what it must look like."""

    task: str
    split: str
    path: str
    commit: str
    # sha256 of the whole file: what verification checks. Rows and columns only make the message
    # of a failed check say what differs.
    sha256: str
    rows: int
    columns: tuple[str, ...]

    @property
    def local_path(self) -> str:
        """Path relative to a benchmark directory: `<task dir>/<split>.csv`."""
        return f"{TASK_DIRS[self.task]}/{self.split}.csv"


# The v2 files, as in the provenance table of the data README (shared/auditorybench/README.md).
# The sha256 values are those of the shared copy (shared/auditorybench). Seven of its files are
# byte-identical to upstream blobs (pitch dev/test/wiki by the README's blob ids: 67973b2, 336efa6,
# b15a9eb). The EXCEPTION is pitch train: the shared copy was reconstructed from v1 blob 35423ab
# plus the one-row change of 97824fa, and was compared with the upstream 97824fa file only by total
# length and 48,600 characters at four places, not in full. Its pinned hash is the reconstruction's;
# if the reconstruction differs from upstream anywhere else, a download of 97824fa fails this
# check (the message says so) and the shared copy must be rechecked against upstream in full.
PINNED_FILES: tuple[UpstreamFile, ...] = (
    UpstreamFile(
        "animal",
        "train",
        "dataset/animal_sound_recognition/train.csv",
        "2e2ff11d09d434e264a20cdf5299f51a6f68465f",
        "4b673c3b75d02f0d2df5f0927cfff0e28652f2a5097fadd1812f56cb8dabeb8d",
        4211,
        _ANIMAL_COLUMNS,
    ),
    UpstreamFile(
        "animal",
        "dev",
        "dataset/animal_sound_recognition/dev.csv",
        "1bb2736477f4f08b495b91e24c07b8eefb7808a2",
        "fa12ccac6add3f91ccae6f76294ce52ed8163f166cfddcb4da02f8eb8ce88b16",
        592,
        _ANIMAL_COLUMNS_DESC,
    ),
    UpstreamFile(
        "animal",
        "test",
        "dataset/animal_sound_recognition/test.csv",
        "6f269a67808b40e17c0e03b2b1a5140deeeabf22",
        "a1986e5db85008292668ad9446b429ba3684b34242acd5da47a1e0b764c916ad",
        1211,
        _ANIMAL_COLUMNS_DESC,
    ),
    UpstreamFile(
        "animal",
        "wiki",
        "dataset/animal_sound_recognition/wiki.csv",
        "7c8170c90b4e879d78dee8bbeda36e8716a97d23",
        "68233c3b5467ae1fea906df8e687e92226f1fc2ed6a8f334aae236c5b0e4b389",
        197,
        _ANIMAL_COLUMNS_DESC,
    ),
    UpstreamFile(
        "pitch",
        "train",
        "dataset/sound_pitch_comparsion/train.csv",
        "97824fafbad8277d130ec4994ecd1bb27b0871c3",
        "2d8351319f351345dac45889934c47ccf19763878873fff651bf0ed74910c034",
        8312,
        _PITCH_COLUMNS,
    ),
    UpstreamFile(
        "pitch",
        "dev",
        "dataset/sound_pitch_comparsion_dev.csv",
        "92ea6b356b9ee247f8541cd1fd919fbe0d990b23",
        "2fd28e5f1ea70e678238f35d0dbee9dea1e113f43e28519a62349c94743e8d75",
        1178,
        _PITCH_COLUMNS,
    ),
    UpstreamFile(
        "pitch",
        "test",
        "dataset/sound_pitch_comparsion_test.csv",
        "92ea6b356b9ee247f8541cd1fd919fbe0d990b23",
        "4c6d34142861b57380bf1fb591adc7a7cb2d852a8f1faf2d81b92be3f55ccf86",
        2387,
        _PITCH_COLUMNS,
    ),
    UpstreamFile(
        "pitch",
        "wiki",
        "dataset/sound_pitch_comparsion_wiki.csv",
        "0412ceb6cb5c29c9a3301e393c58332111109cf0",
        "a1fb94da5bf50b6f5168e0f38ca731fa6239a1484cbc95f70d600ccc4947185b",
        3625,
        _PITCH_WIKI_COLUMNS,
    ),
)
_PINNED = {(f.task, f.split): f for f in PINNED_FILES}

EXAMPLES_SCHEMA = pa.schema(
    [
        pa.field("example_id", pa.string(), nullable=False),
        pa.field("task", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("row", pa.int32(), nullable=False),
        pa.field("sentence", pa.string(), nullable=False),
        pa.field("spans", pa.list_(pa.string()), nullable=False),
        pa.field("answer", pa.string(), nullable=False),
        pa.field("options", pa.list_(pa.string())),
        pa.field("answer_letter", pa.string()),
        pa.field("flags", pa.list_(pa.string()), nullable=False),
    ]
)

REJECTS_SCHEMA = pa.schema(
    [
        pa.field("example_id", pa.string(), nullable=False),
        pa.field("task", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("row", pa.int32(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string(), nullable=False),
        pa.field("raw", pa.string(), nullable=False),
    ]
)


@dataclass
class IngestResult:
    """What `ingest` returns: accepted rows, rejected rows, where they came from, and counts."""

    examples: pa.Table
    rejects: pa.Table
    # One dict per file read: task, split, url, sha256, bytes, rows, git_blob, verified_by.
    provenance: list[dict] = field(default_factory=list)
    # "task/split" -> rows_in, accepted, rejected, rejects_by_reason{}, flags_by_reason{}.
    counts: dict[str, dict] = field(default_factory=dict)


def git_blob_id(data: bytes) -> str:
    """The id git gives these bytes as a blob (`git hash-object`)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def upstream_url(file: UpstreamFile) -> str:
    template = os.environ.get(UPSTREAM_ENV) or DEFAULT_UPSTREAM_TEMPLATE
    require(
        "{commit}" in template and "{path}" in template,
        UPSTREAM_ENV,
        "be a URL template containing {commit} and {path}",
        template,
        f"e.g. {DEFAULT_UPSTREAM_TEMPLATE}",
    )
    return template.replace("{commit}", file.commit).replace("{path}", file.path)


def home_dir() -> str:
    """The verified home of the benchmark: `$ITH_HOME/data/auditorybench` (ITH_HOME: ~/.cache/ith)."""
    return str(ith_home() / "data" / "auditorybench")


PINNED = "pinned"


# ---------------------------------------------------------------------------------------------
# locate, fetch, content


def locate(data_dir: str | None = None, cache_dir: str | None = None) -> str:
    """The benchmark directory (path or fsspec URL) that `ingest` should read (order: module docstring)."""
    if data_dir:
        return str(data_dir)
    from_env = os.environ.get(DATA_DIR_ENV)
    if from_env:
        return from_env
    return fetch(home=cache_dir)["home"]


def fetch(source: str | None = None, home: str | None = None) -> dict:
    """Puts the eight pinned files into the verified home, each checked by its sha256.

    `source`: a benchmark folder or fsspec URL in the layout `<task dir>/<split>.csv` to copy
    from; None: the pinned upstream (or `$ITH_AUDITORYBENCH_UPSTREAM`). A file already in the home
    and verified is left as it is. Returns {"home", "source", "files": [{file, status, sha256}]},
    status `verified` (was there), `copied` or `downloaded`; raises one `DataError` naming every
    file that could not be put there.
    """
    target = Path(home).expanduser() if home else Path(home_dir())
    files, problems = [], []
    for file in PINNED_FILES:
        try:
            status = _ensure_cached(file, target, source)
        except DataError as exc:  # try every file, then name all that failed
            problems.append(str(exc))
            continue
        files.append({"file": file.local_path, "status": status, "sha256": file.sha256})
    if problems:
        what = "pinned AuditoryBench files could not be " + ("copied" if source else "fetched")
        raise DataError(problems_message(problems, len(PINNED_FILES), what))
    return {"home": str(target), "source": source or "upstream", "files": files}


def folder_status(root: str) -> dict[str, str]:
    """`task/split` -> `verified` (the pinned file), `modified` (another file) or `missing`, under `root`."""
    fs, path = fsspec.core.url_to_fs(str(root))
    out = {}
    for file in PINNED_FILES:
        name = f"{path.rstrip('/')}/{file.local_path}"
        if not fs.isfile(name):
            out[f"{file.task}/{file.split}"] = "missing"
            continue
        with fs.open(name, "rb") as handle:
            data = handle.read()
        out[f"{file.task}/{file.split}"] = "verified" if _verification_problem(file, data) is None else "modified"
    return out


def content_id(data_dir: str | None = None, tasks: Iterable[str] = TASKS) -> str:
    """What the files a run reads are: `pinned`, or `sha256:<hash>` of a local or modified copy.

    Read from where `locate` would read them, without downloading: with neither `data_dir` nor
    `$ITH_AUDITORYBENCH_DIR` the files come from the verified home or a verified download, both
    of which only ever hold the pinned files. A missing file counts as a difference here;
    ingestion then names it, with every other problem of the files, before a run folder exists.
    """
    source = data_dir or os.environ.get(DATA_DIR_ENV)
    if not source:
        return PINNED
    root = str(source).rstrip("/")
    digests, pinned = [], True
    for file in (f for f in PINNED_FILES if f.task in tuple(tasks)):
        try:
            digest = hashlib.sha256(_read(f"{root}/{file.local_path}", file.task, file.split)).hexdigest()
        except DataError:
            digest = "missing"
        pinned = pinned and digest == file.sha256
        digests.append(f"{file.local_path}:{digest}")
    return PINNED if pinned else "sha256:" + hashlib.sha256("\n".join(digests).encode()).hexdigest()


def problems_message(problems: list[str], total: int, what: str) -> str:
    """One problem as it is; several as "<n> of <total> <what>:" and one indented line each."""
    if len(problems) == 1:
        return problems[0]
    return f"{len(problems)} of {total} {what}:\n" + "\n".join(f"  - {p}" for p in problems)


def _ensure_cached(file: UpstreamFile, cache: Path, source: str | None = None) -> str:
    target = cache / file.local_path
    if target.is_file():
        problem = _verification_problem(file, target.read_bytes())
        if problem is None:
            return "verified"
        logger.warning("%s in the benchmark home failed verification (%s); replacing it", target, problem)
        target.unlink()
    if source:
        url = f"{str(source).rstrip('/')}/{file.local_path}"
        data = _read(url, file.task, file.split)
        verb = "copied from"
    else:
        url = upstream_url(file)
        data = _download(file, url)
        verb = "downloaded from"
    problem = _verification_problem(file, data)
    if problem is not None:
        raise DataError(f"{file.local_path}: {verb} {url} failed verification: {problem}; the file was not kept")
    target.parent.mkdir(parents=True, exist_ok=True)
    # Written under a temporary name in the same directory and renamed, so `target` only ever
    # exists as a complete, verified file even if the process dies mid-write.
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
    logger.info("%s %s (%d bytes) %s", "copied" if source else "downloaded", target, len(data), url)
    return "copied" if source else "downloaded"


def _download(file: UpstreamFile, url: str) -> bytes:
    try:
        with fsspec.open(url, "rb") as handle:
            return handle.read()
    except ImportError as exc:
        raise DataError(
            f"{file.local_path}: cannot read {url}: {exc}; install the fsspec backend (for https: "
            f"pip install aiohttp), or fill the benchmark home with `ith data fetch --from DIR`"
        ) from exc
    except (OSError, ValueError) as exc:
        raise DataError(
            f"{file.local_path}: download from {url} failed: {exc!r}; check the network or "
            f"{UPSTREAM_ENV}, or put a copy into the benchmark home on this machine with "
            f"`ith data fetch --from DIR` (or set {DATA_DIR_ENV} to a copy)"
        ) from exc


def _verification_problem(file: UpstreamFile, data: bytes) -> str | None:
    """None if `data` is the pinned file (same sha256), else what was expected and what was found."""
    digest = hashlib.sha256(data).hexdigest()
    if digest == file.sha256:
        return None
    try:
        header, rows = _parse(data)
        shape = f"columns {list(header)} and {len(rows)} data rows (expected {list(file.columns)} and {file.rows})"
    except (UnicodeDecodeError, csv.Error) as exc:
        shape = f"unreadable text ({exc})"
    note = (
        (" (the pinned hash is that of a reconstruction compared with upstream only in part: see PINNED_FILES)")
        if (file.task, file.split) == ("pitch", "train")
        else ""
    )
    return f"sha256 expected {file.sha256}, got {digest}{note}; the file has {shape}"


def _verified_by(task: str, split: str, data: bytes) -> str:
    return "sha256" if _verification_problem(_PINNED[(task, split)], data) is None else "local"


# ---------------------------------------------------------------------------------------------
# ingest


def _parse(data: bytes) -> tuple[list[str], list[list[str]]]:
    # utf-8-sig: a BOM would otherwise glue itself to the first column name.
    text = data.decode("utf-8-sig")
    records = [r for r in csv.reader(io.StringIO(text, newline="")) if r]
    if not records:
        return [], []
    return [c.strip() for c in records[0]], records[1:]


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


def ingest(source: str, tasks: Iterable[str] = TASKS, splits: Iterable[str] = SPLITS) -> IngestResult:
    """Read, validate and normalise the chosen tasks and splits of the benchmark at `source`."""
    tasks = (tasks,) if isinstance(tasks, str) else tuple(tasks)
    splits = (splits,) if isinstance(splits, str) else tuple(splits)
    for task in tasks:
        require(task in TASKS, "tasks", f"contain only {TASKS}", task)
    for split in splits:
        require(split in SPLITS, "splits", f"contain only {SPLITS}", split)
    require(len(tasks) > 0, "tasks", "name at least one task", tasks)
    require(len(splits) > 0, "splits", "name at least one split", splits)

    root = str(source).rstrip("/")
    ex = {name: [] for name in EXAMPLES_SCHEMA.names}
    rj = {name: [] for name in REJECTS_SCHEMA.names}
    provenance: list[dict] = []
    counts: dict[str, dict] = {}
    problems: list[str] = []
    # Canonical order, whatever order the caller named them in, so the output is deterministic.
    for task in (t for t in TASKS if t in tasks):
        for split in (s for s in SPLITS if s in splits):
            url = f"{root}/{TASK_DIRS[task]}/{split}.csv"
            try:
                prov, count = _ingest_file(task, split, url, ex, rj)
            except DataError as exc:  # check every file, then fail once naming them all
                problems.append(str(exc))
                continue
            provenance.append(prov)
            counts[f"{task}/{split}"] = count
            logger.info(
                "%s/%s: %d rows, %d accepted, %d rejected %s, flags %s",
                task,
                split,
                count["rows_in"],
                count["accepted"],
                count["rejected"],
                {k: v for k, v in count["rejects_by_reason"].items() if v},
                {k: v for k, v in count["flags_by_reason"].items() if v},
            )
    if problems:
        raise DataError(problems_message(problems, len(tasks) * len(splits), "AuditoryBench files cannot be used"))
    examples = pa.Table.from_pydict(ex, schema=EXAMPLES_SCHEMA)
    rejects = pa.Table.from_pydict(rj, schema=REJECTS_SCHEMA)
    return IngestResult(examples=examples, rejects=rejects, provenance=provenance, counts=counts)


def _read(url: str, task: str, split: str) -> bytes:
    try:
        with fsspec.open(url, "rb") as handle:
            return handle.read()
    except FileNotFoundError as exc:
        raise DataError(
            f"{url}: AuditoryBench file for task {task!r}, split {split!r} not found; "
            f"expected the layout <data_dir>/{TASK_DIRS[task]}/{split}.csv"
        ) from exc


def _column_map(url: str, task: str, header: list[str]) -> dict[str, int]:
    """Column name -> index for the columns this task needs, under their normalised names."""
    index = {name: i for i, name in enumerate(header)}
    needed = (
        ("sentence", "answer", "span1", "span2") if task == "pitch" else ("animal", "sentence", *_LETTERS, "Answer")
    )
    missing = [repr(name) for name in needed if name not in index]
    if task == "animal":
        if "span" in index and "description" in index:
            raise DataError(
                f"{url}: header has both 'span' and 'description', expected one of them "
                f"as the animal sound description; header is {header}"
            )
        if "span" not in index and "description" not in index:
            missing.append("'description' (or 'span', its name in train)")
    if missing:
        raise DataError(
            f"{url}: missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
            f"(task {task!r}); header is {header}"
        )
    columns = {name: index[name] for name in needed}
    if task == "animal":
        columns["description"] = index["span" if "span" in index else "description"]
    return columns


def _reject_reason(task: str, sentence: str, get) -> tuple[str, str] | None:
    if not sentence:
        return "empty_sentence", "sentence: must not be empty"
    masks = sentence.count(MASK)
    if masks == 0:
        return "no_mask", f"sentence: must contain {MASK} once, found none"
    if masks > 1:
        return "multiple_masks", f"sentence: must contain {MASK} once, found {masks}"
    if task == "animal":
        if not get("animal").strip():
            return "empty_answer", "animal: must not be empty"
        letter = get("Answer").strip()
        if letter not in _LETTERS:
            return "invalid_answer_letter", f"Answer: must be one of A, B, C, D, got {get('Answer')!r}"
    else:
        if get("answer").strip().lower() not in _PITCH_ANSWERS:
            return (
                "answer_not_higher_lower",
                f"answer: must be 'higher' or 'lower' (case and spaces ignored), got {get('answer')!r}",
            )
    return None


def _ingest_file(task: str, split: str, url: str, ex: dict, rj: dict) -> tuple[dict, dict]:
    data = _read(url, task, split)
    try:
        header, records = _parse(data)
    except UnicodeDecodeError as exc:
        raise DataError(f"{url}: not UTF-8 text ({exc})") from exc
    except csv.Error as exc:
        raise DataError(f"{url}: not a readable CSV file ({exc})") from exc
    if not header:
        raise DataError(f"{url}: empty file, expected a header row")
    cols = _column_map(url, task, header)
    width = len(header)
    bad_width = [(row, len(record)) for row, record in enumerate(records, start=1) if len(record) != width]
    if len(bad_width) == 1:
        raise DataError(f"{url}: data row {bad_width[0][0]} has {bad_width[0][1]} fields, the header has {width}")
    if bad_width:
        listed = ", ".join(f"{row} ({n})" for row, n in bad_width[:5])
        more = f" and {len(bad_width) - 5} more" if len(bad_width) > 5 else ""
        raise DataError(
            f"{url}: {len(bad_width)} data rows have a field count other than the header's {width}: "
            f"rows (fields) {listed}{more}"
        )
    span_cols = ("description",) if task == "animal" else ("span1", "span2")

    rejects_by_reason = dict.fromkeys(REJECT_REASONS, 0)
    flags_by_reason = dict.fromkeys(FLAG_REASONS, 0)
    seen: set[tuple[str, ...]] = set()
    seen_normalised: set[tuple[str, ...]] = set()
    accepted = 0
    for row, record in enumerate(records, start=1):
        example_id = f"{task}/{split}/{row:05d}"

        def get(name: str, _record=record) -> str:
            return _record[cols[name]]

        key = tuple(record)
        duplicate = key in seen
        seen.add(key)
        normalised = tuple(_norm(value) for value in record)
        near_duplicate = not duplicate and normalised in seen_normalised
        seen_normalised.add(normalised)
        sentence = get("sentence").strip()
        rejected = _reject_reason(task, sentence, get)
        if rejected is not None:
            reason, detail = rejected
            rejects_by_reason[reason] += 1
            rj["example_id"].append(example_id)
            rj["task"].append(task)
            rj["split"].append(split)
            rj["row"].append(row)
            rj["reason"].append(reason)
            rj["detail"].append(detail)
            rj["raw"].append(json.dumps(dict(zip(header, record)), ensure_ascii=False))
            continue

        flags: list[str] = []
        spans = [s for s in (get(c).strip() for c in span_cols) if s]
        if len(spans) < len(span_cols):
            flags.append("empty_span")
        sentence_norm = _norm(sentence)
        if any(_norm(s) not in sentence_norm for s in spans):
            flags.append("span_not_in_sentence")
        if task == "animal":
            answer = get("animal").strip()
            letter = get("Answer").strip()
            options = [get(c).strip() for c in _LETTERS]
            gold = _norm(answer)
            if _norm(options[_LETTERS.index(letter)]) != gold:
                flags.append("answer_letter_mismatch")
            if all(_norm(o) != gold for o in options):
                flags.append("animal_not_in_options")
        else:
            answer = get("answer").strip().lower()
            letter = None
            options = None
        if duplicate:
            flags.append("duplicate_row")
        if near_duplicate:
            flags.append("normalised_duplicate_row")
        for flag in flags:
            flags_by_reason[flag] += 1

        accepted += 1
        ex["example_id"].append(example_id)
        ex["task"].append(task)
        ex["split"].append(split)
        ex["row"].append(row)
        ex["sentence"].append(sentence)
        ex["spans"].append(spans)
        ex["answer"].append(answer)
        ex["options"].append(options)
        ex["answer_letter"].append(letter)
        ex["flags"].append(flags)

    rejected_total = sum(rejects_by_reason.values())
    # Explicit check rather than `assert`, so it also holds under `python -O`.
    if accepted + rejected_total != len(records):
        raise RuntimeError(
            f"{url}: {len(records)} rows in but {accepted} accepted + "
            f"{rejected_total} rejected; every row must land in exactly one table"
        )
    blob = git_blob_id(data)
    provenance = {
        "task": task,
        "split": split,
        "url": url,
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "rows": len(records),
        "git_blob": blob,
        "verified_by": _verified_by(task, split, data),
    }
    count = {
        "rows_in": len(records),
        "accepted": accepted,
        "rejected": rejected_total,
        "rejects_by_reason": rejects_by_reason,
        "flags_by_reason": flags_by_reason,
    }
    return provenance, count
