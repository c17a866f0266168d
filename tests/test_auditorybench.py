"""AuditoryBench ingestion: counts against the data README, every row rule, locate and its cache.

One module, over 600 lines, because it mirrors ith_core/data/auditorybench.py: one test per row
rule and per failure of locating or fetching the pinned files, sharing the fixtures that break them."""

from __future__ import annotations

import collections
import csv
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path

import fsspec
import pytest

from ith_core.config import SPLITS, TASKS, ConfigError
from ith_core.data.auditorybench import (
    DEFAULT_UPSTREAM_TEMPLATE,
    EXAMPLES_SCHEMA,
    FLAG_REASONS,
    PINNED_FILES,
    REJECT_REASONS,
    REJECTS_SCHEMA,
    TASK_DIRS,
    DataError,
    content_id,
    fetch,
    folder_status,
    git_blob_id,
    home_dir,
    ingest,
    locate,
    upstream_url,
)

README_ROWS = {
    "animal/train": 4211,
    "animal/dev": 592,
    "animal/test": 1211,
    "animal/wiki": 197,
    "pitch/train": 8312,
    "pitch/dev": 1178,
    "pitch/test": 2387,
    "pitch/wiki": 3625,
}
README_MISMATCH_ROWS = {
    "animal/train": [416, 651, 925, 1472, 2041, 2690, 3133, 3144, 3659, 3729, 4046, 4195],
    "animal/dev": [70, 312],
    "animal/test": [608],
    "animal/wiki": [6, 48, 60, 73, 128, 131, 193],
}
# Every pinned file is verified by its sha256; the shared copies are the pinned bytes.
VERIFIED_BY = {key: "sha256" for key in README_ROWS}
ANIMAL_HEADER = ["animal", "description", "sentence", "A", "B", "C", "D", "Answer"]
PITCH_HEADER = ["sentence", "answer", "span1", "span2"]
GOOD_ANIMAL = ["owl", "hoot", "An [MASK] makes a hoot at night.", "owl", "cat", "dog", "cow", "A"]
GOOD_PITCH = ["A whistle has a [MASK] pitch than a drum.", "higher", "whistle", "drum"]


@pytest.fixture(scope="module")
def full(bench_dir):
    return ingest(str(bench_dir))


@pytest.fixture(scope="module")
def rows(full):
    """The full ingest as Python rows, by "task/split", examples and rejects apart."""
    grouped: dict[str, dict[str, list[dict]]] = {key: {"examples": [], "rejects": []} for key in README_ROWS}
    for name in ("examples", "rejects"):
        for r in getattr(full, name).to_pylist():
            grouped[f"{r['task']}/{r['split']}"][name].append(r)
    return grouped


def _col(rows, key: str, column: str = "row", table: str = "examples") -> list:
    return [r[column] for r in rows[key][table]]


def _flagged(rows, key: str, flag: str) -> list[int]:
    return [r["row"] for r in rows[key]["examples"] if flag in r["flags"]]


def _write_csv(root: Path, task: str, split: str, header: list[str], rows: list[list[str]]) -> Path:
    path = root / TASK_DIRS[task] / f"{split}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle, lineterminator="\n").writerows([header, *rows])
    return path


def _one(tmp_path: Path, task: str, rows: list[list[str]], header: list[str] | None = None, split: str = "dev"):
    header = header or (ANIMAL_HEADER if task == "animal" else PITCH_HEADER)
    _write_csv(tmp_path, task, split, header, rows)
    return ingest(str(tmp_path), tasks=(task,), splits=(split,))


# --- the shared benchmark copy against its README --------------------------------------------


def test_row_counts_match_readme_and_every_row_lands_once(full, rows, bench_dir):
    assert list(full.counts) == list(README_ROWS)
    for key, expected in README_ROWS.items():
        task, split = key.split("/")
        with open(bench_dir / TASK_DIRS[task] / f"{split}.csv", newline="", encoding="utf-8") as handle:
            independent = sum(1 for _ in csv.DictReader(handle))
        count = full.counts[key]
        in_tables = len(rows[key]["examples"]) + len(rows[key]["rejects"])
        assert count["rows_in"] == expected == independent == in_tables, key
        assert count["accepted"] + count["rejected"] == count["rows_in"], key
        assert count["accepted"] == len(rows[key]["examples"]), key
        assert count["rejected"] == len(rows[key]["rejects"]) == sum(count["rejects_by_reason"].values()), key
        assert list(count["rejects_by_reason"]) == list(REJECT_REASONS)
        assert list(count["flags_by_reason"]) == list(FLAG_REASONS)
        for flag in FLAG_REASONS:
            assert count["flags_by_reason"][flag] == len(_flagged(rows, key, flag)), (key, flag)
    assert full.examples.num_rows + full.rejects.num_rows == sum(README_ROWS.values()) == 21713


def test_only_rejects_are_the_three_double_mask_train_sentences(full):
    rejects = full.rejects.to_pylist()
    assert [(r["example_id"], r["reason"]) for r in rejects] == [
        ("animal/train/00597", "multiple_masks"),
        ("animal/train/02112", "multiple_masks"),
        ("animal/train/03132", "multiple_masks"),
    ]
    assert "found 2" in rejects[0]["detail"] and "sentence" in rejects[0]["detail"]
    raw = json.loads(rejects[2]["raw"])
    assert raw["sentence"] == "The sound of a large herd of [MASK] migrating in Tanzania is [MASK]."
    assert list(raw) == ["animal", "span", "sentence", "A", "B", "C", "D", "Answer"]


def test_answer_letter_mismatch_is_exactly_the_22_readme_rows(rows, bench_dir):
    flagged = {key: _flagged(rows, key, "answer_letter_mismatch") for key in README_MISMATCH_ROWS}
    assert flagged == README_MISMATCH_ROWS
    assert sum(len(v) for v in flagged.values()) == 22
    for key in README_ROWS:
        assert _flagged(rows, key, "animal_not_in_options") == [], key
    # The gold answer stays the `animal` column; the letter is kept as upstream wrote it.
    row = rows["animal/dev"]["examples"][69]
    with open(bench_dir / "animal_sound_recognition" / "dev.csv", newline="", encoding="utf-8") as handle:
        upstream = list(csv.DictReader(handle))[69]
    assert row["row"] == 70
    assert row["answer"] == upstream["animal"] and row["answer_letter"] == upstream["Answer"]
    assert row["options"][ord(row["answer_letter"]) - ord("A")] != row["answer"]


def test_duplicate_flags_count_repeats_of_earlier_rows(full, rows, bench_dir):
    readme = {"animal/train": 14, "pitch/train": 110, "pitch/dev": 9, "pitch/test": 22}
    for key in README_ROWS:
        task, split = key.split("/")
        with open(bench_dir / TASK_DIRS[task] / f"{split}.csv", newline="", encoding="utf-8") as handle:
            groups = collections.Counter(tuple(r) for r in list(csv.reader(handle))[1:])
        repeats = sum(n - 1 for n in groups.values())
        assert full.counts[key]["flags_by_reason"]["duplicate_row"] == repeats == readme.get(key, 0), key
    # pitch dev: all nine are repeats of one row that occurs ten times; its first copy is unflagged.
    dev = rows["pitch/dev"]["examples"]
    flagged = [r for r in dev if "duplicate_row" in r["flags"]]
    copies = [
        r
        for r in dev
        if (r["sentence"], r["spans"], r["answer"])
        == (flagged[0]["sentence"], flagged[0]["spans"], flagged[0]["answer"])
    ]
    assert len(copies) == 10 and copies[1:] == flagged and "duplicate_row" not in copies[0]["flags"]


def test_empty_span_rows(rows):
    # README names dev 676 and 792 (span2 ""); span2 " " (whitespace only, after a `17"`-style
    # inch mark upstream) is empty too: dev 324, train 2390/4086/5802, test 485.
    assert _flagged(rows, "pitch/dev", "empty_span") == [324, 676, 792]
    assert _flagged(rows, "pitch/train", "empty_span") == [2390, 4086, 5802]
    assert _flagged(rows, "pitch/test", "empty_span") == [485]
    assert rows["pitch/dev"]["examples"][675]["spans"] == [
        "sound of a typical CMaj - FMaj - GMaj - CMaj chord progression played with the 'Space rez' patch in Synth1"
    ]
    # v2 train fills span2 of row 5,345 (empty in v1): the v2 file is the one read.
    assert rows["pitch/train"]["examples"][5344]["row"] == 5345
    assert rows["pitch/train"]["examples"][5344]["spans"][1] == "sound of a flute in 'Mozart - La Flûte enchantée"


def test_pitch_labels_match_readme_balance(rows):
    higher = {key: _col(rows, key, "answer").count("higher") for key in README_ROWS if key.startswith("pitch/")}
    assert higher == {"pitch/train": 4950, "pitch/dev": 698, "pitch/test": 1442, "pitch/wiki": 1735}
    for key in higher:
        assert set(_col(rows, key, "answer")) == {"higher", "lower"}


def test_schema_is_one_for_all_tasks_and_splits(full, rows, bench_dir):
    assert full.examples.schema.equals(EXAMPLES_SCHEMA)
    assert full.rejects.schema.equals(REJECTS_SCHEMA)
    for task in TASKS:
        for split in SPLITS:
            part = ingest(str(bench_dir), tasks=(task,), splits=(split,))
            assert part.examples.schema.equals(EXAMPLES_SCHEMA), (task, split)
            assert part.rejects.schema.equals(REJECTS_SCHEMA), (task, split)
            examples = part.examples.to_pylist()
            assert examples == rows[f"{task}/{split}"]["examples"]
            for r in examples:
                assert (r["options"] is None) == (r["answer_letter"] is None) == (task == "pitch")
                assert 1 <= len(r["spans"]) <= (1 if task == "animal" else 2)
                assert r["sentence"] == r["sentence"].strip() and r["sentence"].count("[MASK]") == 1


def test_example_ids_stable_unique_and_cover_every_row(full, rows, bench_dir):
    ids = full.examples.column("example_id").to_pylist() + full.rejects.column("example_id").to_pylist()
    assert len(ids) == len(set(ids))
    for key, n in README_ROWS.items():
        both = rows[key]["examples"] + rows[key]["rejects"]
        for r in both:
            assert r["example_id"] == f"{r['task']}/{r['split']}/{r['row']:05d}"
        assert sorted(r["row"] for r in both) == list(range(1, n + 1))
    again = ingest(str(bench_dir), tasks=("animal",), splits=("train",))
    assert again.examples.column("example_id").to_pylist() == _col(rows, "animal/train", "example_id")
    first = rows["animal/train"]["examples"][0]
    assert first["example_id"] == "animal/train/00001"
    assert first["sentence"] == "A [MASK] makes a sound like a continuous, high-pitched whine."
    assert first["spans"] == ["continuous, high-pitched whine"] and first["answer"] == "cicada"


def test_pitch_wiki_column_order_is_normalised(rows, tmp_path):
    wiki = rows["pitch/wiki"]["examples"][0]
    assert (wiki["sentence"], wiki["spans"], wiki["answer"]) == (
        "The sound of Bass is [MASK] than the sound of alto",
        ["Bass", "alto"],
        "lower",
    )
    s, a, s1, s2 = GOOD_PITCH
    _write_csv(tmp_path, "pitch", "train", PITCH_HEADER, [[s, a, s1, s2]])
    _write_csv(tmp_path, "pitch", "wiki", ["span1", "span2", "sentence", "answer"], [[s1, s2, s, a]])
    result = ingest(str(tmp_path), tasks=("pitch",), splits=("train", "wiki"))
    train, wiki = result.examples.to_pylist()
    for name in ("sentence", "spans", "answer", "options", "answer_letter", "flags"):
        assert train[name] == wiki[name], name
    assert wiki["spans"] == ["whistle", "drum"]


def test_provenance(full, bench_dir):
    assert {f"{p['task']}/{p['split']}": p["verified_by"] for p in full.provenance} == VERIFIED_BY
    p = full.provenance[0]
    data = (bench_dir / "animal_sound_recognition" / "train.csv").read_bytes()
    assert p["url"].endswith("animal_sound_recognition/train.csv")
    assert p["bytes"] == len(data) and p["rows"] == 4211
    assert p["sha256"] == hashlib.sha256(data).hexdigest()


# --- row rules on tiny synthetic files ---------------------------------------------------------


def _animal(**changes) -> list[str]:
    row = dict(zip(ANIMAL_HEADER, GOOD_ANIMAL))
    row.update(changes)
    return [row[c] for c in ANIMAL_HEADER]


def _pitch(**changes) -> list[str]:
    row = dict(zip(PITCH_HEADER, GOOD_PITCH))
    row.update(changes)
    return [row[c] for c in PITCH_HEADER]


@pytest.mark.parametrize(
    "task, bad, reason, detail",
    [
        ("animal", _animal(sentence="   "), "empty_sentence", "sentence: must not be empty"),
        ("pitch", _pitch(sentence=""), "empty_sentence", "sentence: must not be empty"),
        (
            "animal",
            _animal(sentence="An owl makes a hoot."),
            "no_mask",
            "sentence: must contain [MASK] once, found none",
        ),
        ("pitch", _pitch(sentence="A whistle has a [mask] pitch."), "no_mask", "found none"),
        ("animal", _animal(sentence="A [MASK] hoots like a [MASK]."), "multiple_masks", "found 2"),
        ("pitch", _pitch(sentence="[MASK] [MASK] [MASK]"), "multiple_masks", "found 3"),
        ("animal", _animal(animal=" "), "empty_answer", "animal: must not be empty"),
        ("animal", _animal(Answer="E"), "invalid_answer_letter", "Answer: must be one of A, B, C, D, got 'E'"),
        ("animal", _animal(Answer=""), "invalid_answer_letter", "got ''"),
        ("animal", _animal(Answer="a"), "invalid_answer_letter", "got 'a'"),
        ("pitch", _pitch(answer="same"), "answer_not_higher_lower", "answer: must be 'higher' or 'lower'"),
        ("pitch", _pitch(answer=""), "answer_not_higher_lower", "got ''"),
    ],
)
def test_reject_rules(tmp_path, task, bad, reason, detail):
    good = GOOD_ANIMAL if task == "animal" else GOOD_PITCH
    result = _one(tmp_path, task, [good, bad])
    assert result.examples.column("row").to_pylist() == [1]
    (reject,) = result.rejects.to_pylist()
    assert (reject["example_id"], reject["row"], reject["reason"]) == (f"{task}/dev/00002", 2, reason)
    assert detail in reject["detail"]
    header = ANIMAL_HEADER if task == "animal" else PITCH_HEADER
    assert json.loads(reject["raw"]) == dict(zip(header, bad))
    count = result.counts[f"{task}/dev"]
    assert (count["rows_in"], count["accepted"], count["rejected"]) == (2, 1, 1)
    assert count["rejects_by_reason"] == {r: int(r == reason) for r in REJECT_REASONS}


@pytest.mark.parametrize(
    "bad, reason",
    [
        (_animal(sentence="", animal="", Answer="Z"), "empty_sentence"),
        (_animal(sentence="no mask here", animal="", Answer="Z"), "no_mask"),
        (_animal(sentence="[MASK][MASK]", animal="", Answer="Z"), "multiple_masks"),
        (_animal(animal="", Answer="Z"), "empty_answer"),
    ],
)
def test_first_failing_reason_wins(tmp_path, bad, reason):
    assert _one(tmp_path, "animal", [bad]).rejects.column("reason").to_pylist() == [reason]


def test_pitch_answer_is_normalised(tmp_path):
    result = _one(tmp_path, "pitch", [_pitch(answer=" Higher "), _pitch(answer="LOWER")])
    assert result.examples.column("answer").to_pylist() == ["higher", "lower"]
    assert result.rejects.num_rows == 0


@pytest.mark.parametrize(
    "task, row, flags, spans",
    [
        ("animal", _animal(description="  "), ["empty_span"], []),
        ("pitch", _pitch(span2=""), ["empty_span"], ["whistle"]),
        ("pitch", _pitch(span1=" ", span2="\t"), ["empty_span"], []),
        ("animal", _animal(description="loud roar"), ["span_not_in_sentence"], ["loud roar"]),
        ("pitch", _pitch(span2="trumpet"), ["span_not_in_sentence"], ["whistle", "trumpet"]),
        ("pitch", _pitch(span1="A  WHISTLE ", span2="drum"), [], ["A  WHISTLE", "drum"]),
        ("animal", _animal(Answer="B"), ["answer_letter_mismatch"], ["hoot"]),
        ("animal", _animal(A="Owl ", Answer="A"), [], ["hoot"]),
        ("animal", _animal(A="bat", Answer="A"), ["answer_letter_mismatch", "animal_not_in_options"], ["hoot"]),
        (
            "animal",
            _animal(description="", A="bat", Answer="B"),
            ["empty_span", "answer_letter_mismatch", "animal_not_in_options"],
            [],
        ),
    ],
)
def test_flag_rules(tmp_path, task, row, flags, spans):
    result = _one(tmp_path, task, [row])
    assert result.rejects.num_rows == 0
    (example,) = result.examples.to_pylist()
    assert example["flags"] == flags and example["spans"] == spans
    assert result.counts[f"{task}/dev"]["flags_by_reason"] == {f: int(f in flags) for f in FLAG_REASONS}


def test_mismatch_keeps_animal_as_gold_and_letter_as_upstream(tmp_path):
    (example,) = _one(tmp_path, "animal", [_animal(Answer=" C ")]).examples.to_pylist()
    assert (example["answer"], example["answer_letter"], example["options"]) == (
        "owl",
        "C",
        ["owl", "cat", "dog", "cow"],
    )


def test_duplicate_row_flags_each_repeat_only(tmp_path):
    rows = [GOOD_PITCH, _pitch(answer="lower"), GOOD_PITCH, _pitch(answer="higher "), GOOD_PITCH]
    result = _one(tmp_path, "pitch", rows)
    assert [e["flags"] for e in result.examples.to_pylist()] == [
        [],
        [],
        ["duplicate_row"],
        ["normalised_duplicate_row"],
        ["duplicate_row"],
    ]
    assert result.counts["pitch/dev"]["flags_by_reason"]["duplicate_row"] == 2
    assert result.counts["pitch/dev"]["flags_by_reason"]["normalised_duplicate_row"] == 1


@pytest.mark.parametrize(
    "task, first, later, duplicate",
    [
        ("pitch", GOOD_PITCH, _pitch(answer="Higher"), True),
        ("pitch", GOOD_PITCH, _pitch(sentence="a  whistle has a [MASK] pitch\tthan a DRUM. "), True),
        ("pitch", GOOD_PITCH, _pitch(span1="WHISTLE"), True),
        ("animal", GOOD_ANIMAL, _animal(animal="Owl", A="OWL", description=" Hoot"), True),
        ("pitch", GOOD_PITCH, _pitch(sentence="A whistle has a [MASK] pitch than a drum!"), False),  # punctuation
        ("pitch", GOOD_PITCH, _pitch(span2="drúm"), False),  # accents count
        ("pitch", GOOD_PITCH, _pitch(answer="lower"), False),
    ],
)
def test_duplicates_after_normalisation_are_flagged(tmp_path, task, first, later, duplicate):
    """Normalisation: whitespace stripped and collapsed, then case-folded; nothing else."""
    result = _one(tmp_path, task, [first, later, later])
    flags = [e["flags"] for e in result.examples.to_pylist()]
    second = [f for f in flags[1] if f in ("duplicate_row", "normalised_duplicate_row")]
    assert second == (["normalised_duplicate_row"] if duplicate else [])
    # The third row repeats the second exactly: an exact duplicate, not a normalised one.
    assert "duplicate_row" in flags[2] and "normalised_duplicate_row" not in flags[2]


def test_normalised_duplicates_in_the_benchmark(full, bench_dir):
    """Counted independently here: rows equal to an earlier row once each field is normalised, minus exact repeats."""
    total = 0
    for key in README_ROWS:
        task, split = key.split("/")
        with open(bench_dir / TASK_DIRS[task] / f"{split}.csv", newline="", encoding="utf-8") as handle:
            records = [r for r in csv.reader(handle)][1:]
        exact, normal, expected = set(), set(), 0
        for record in records:
            key_exact, key_norm = tuple(record), tuple(" ".join(v.split()).casefold() for v in record)
            expected += key_exact not in exact and key_norm in normal
            exact.add(key_exact)
            normal.add(key_norm)
        assert full.counts[key]["flags_by_reason"]["normalised_duplicate_row"] == expected, key
        total += expected
    assert total > 0  # the benchmark has such rows (e.g. case differences)


def test_animal_train_span_column(tmp_path):
    header = ["animal", "span", *ANIMAL_HEADER[2:]]
    result = _one(tmp_path, "animal", [GOOD_ANIMAL], header=header, split="train")
    assert result.examples.column("spans").to_pylist() == [["hoot"]]


def test_memory_url_source():
    root = f"memory://ith-test-{uuid.uuid4().hex}"
    fs = fsspec.filesystem("memory")
    try:
        for path, header, rows in [
            (f"{root}/animal_sound_recognition/test.csv", ANIMAL_HEADER, [GOOD_ANIMAL, _animal(Answer="X")]),
            (f"{root}/sound_pitch_comparison/test.csv", PITCH_HEADER, [GOOD_PITCH, _pitch(answer="louder")]),
        ]:
            with fsspec.open(path, "w", newline="", encoding="utf-8") as handle:
                csv.writer(handle).writerows([header, *rows])
        result = ingest(root, splits=("test",))
    finally:
        fs.rm(root.removeprefix("memory://"), recursive=True)
    assert result.examples.column("example_id").to_pylist() == ["animal/test/00001", "pitch/test/00001"]
    assert result.rejects.column("reason").to_pylist() == ["invalid_answer_letter", "answer_not_higher_lower"]
    assert [p["url"] for p in result.provenance] == [
        f"{root}/animal_sound_recognition/test.csv",
        f"{root}/sound_pitch_comparison/test.csv",
    ]
    assert {p["verified_by"] for p in result.provenance} == {"local"}


# --- broken files ------------------------------------------------------------------------------


def test_missing_column_names_file_and_column(tmp_path):
    path = _write_csv(tmp_path, "pitch", "dev", ["sentence", "answer", "span1"], [GOOD_PITCH[:3]])
    with pytest.raises(DataError, match=r"missing column 'span2'") as info:
        ingest(str(tmp_path), tasks=("pitch",), splits=("dev",))
    assert str(path) in str(info.value)
    path = _write_csv(tmp_path, "animal", "wiki", ["animal", "sentence", "A", "B", "C", "D", "Answer"], [])
    with pytest.raises(DataError, match=r"missing column 'description' \(or 'span'") as info:
        ingest(str(tmp_path), tasks=("animal",), splits=("wiki",))
    assert str(path) in str(info.value)


def test_missing_file_names_the_file(tmp_path):
    _write_csv(tmp_path, "animal", "dev", ANIMAL_HEADER, [GOOD_ANIMAL])
    with pytest.raises(DataError, match="not found") as info:
        ingest(str(tmp_path), tasks=("animal",), splits=("dev", "test"))
    assert str(tmp_path / "animal_sound_recognition" / "test.csv") in str(info.value)


def test_ragged_row_names_file_and_row(tmp_path):
    path = _write_csv(tmp_path, "pitch", "dev", PITCH_HEADER, [GOOD_PITCH, GOOD_PITCH[:3]])
    with pytest.raises(DataError, match="data row 2 has 3 fields, the header has 4") as info:
        ingest(str(tmp_path), tasks=("pitch",), splits=("dev",))
    assert str(path) in str(info.value)
    rows = [GOOD_PITCH] + [GOOD_PITCH[:3]] * 3 + [GOOD_PITCH + ["x"]] * 4
    _write_csv(tmp_path, "pitch", "dev", PITCH_HEADER, rows)
    with pytest.raises(
        DataError,
        match=r"7 data rows have a field count other than the header's 4: rows \(fields\) "
        r"2 \(3\), 3 \(3\), 4 \(3\), 5 \(5\), 6 \(5\) and 2 more",
    ):
        ingest(str(tmp_path), tasks=("pitch",), splits=("dev",))


def test_every_broken_file_is_named_in_one_error(tmp_path, bench_dir):
    """Each file is checked; one error names every broken one and its problem, nothing is half-read."""
    for f in PINNED_FILES:
        target = tmp_path / f.local_path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(bench_dir / f.local_path, target)
    (tmp_path / "animal_sound_recognition" / "dev.csv").unlink()
    (tmp_path / "sound_pitch_comparison" / "test.csv").write_bytes(b"")
    _write_csv(tmp_path, "pitch", "dev", ["sentence", "answer"], [GOOD_PITCH[:2]])
    _write_csv(tmp_path, "animal", "wiki", ANIMAL_HEADER, [GOOD_ANIMAL, GOOD_ANIMAL[:5]])
    (tmp_path / "animal_sound_recognition" / "test.csv").write_bytes(b"animal,description\n\xff\xfe\n")
    with pytest.raises(DataError) as info:
        ingest(str(tmp_path))
    lines = str(info.value).splitlines()
    assert lines[0] == "5 of 8 AuditoryBench files cannot be used:"
    assert lines[1:] == [
        f"  - {tmp_path}/animal_sound_recognition/dev.csv: AuditoryBench file for task 'animal', split 'dev' not found; "
        "expected the layout <data_dir>/animal_sound_recognition/dev.csv",
        f"  - {tmp_path}/animal_sound_recognition/test.csv: not UTF-8 text ('utf-8' codec can't decode byte 0xff in "
        "position 19: invalid start byte)",
        f"  - {tmp_path}/animal_sound_recognition/wiki.csv: data row 2 has 5 fields, the header has 8",
        f"  - {tmp_path}/sound_pitch_comparison/dev.csv: missing columns 'span1', 'span2' (task 'pitch'); header is "
        "['sentence', 'answer']",
        f"  - {tmp_path}/sound_pitch_comparison/test.csv: empty file, expected a header row",
    ]


def test_bom_and_crlf_files_read_like_plain_ones(tmp_path):
    plain = _one(tmp_path / "plain", "pitch", [GOOD_PITCH])
    path = tmp_path / "bom" / "sound_pitch_comparison" / "dev.csv"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\xef\xbb\xbf" + (",".join(PITCH_HEADER) + "\r\n" + ",".join(GOOD_PITCH) + "\r\n").encode())
    bom = ingest(str(tmp_path / "bom"), tasks=("pitch",), splits=("dev",))
    assert bom.examples.drop(["flags"]).equals(plain.examples.drop(["flags"])) and bom.rejects.num_rows == 0


def test_unknown_task_is_a_config_error(bench_dir):
    with pytest.raises(ConfigError, match="tasks must contain only"):
        ingest(str(bench_dir), tasks=("speech",))


# --- locate, download and verification -------------------------------------------------------


def test_git_blob_id_matches_git():
    assert git_blob_id(b"") == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
    assert git_blob_id(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"


def test_shared_copies_against_their_pinned_hashes(bench_dir):
    assert len({f.sha256 for f in PINNED_FILES}) == len(PINNED_FILES) == 8
    for f in PINNED_FILES:
        data = (bench_dir / f.local_path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == f.sha256, f
    # The data README's blob ids hold for the three files it gives them for.
    blobs = {f"{f.task}/{f.split}": git_blob_id((bench_dir / f.local_path).read_bytes()) for f in PINNED_FILES}
    assert [blobs[k][:7] for k in ("pitch/dev", "pitch/test", "pitch/wiki")] == ["67973b2", "336efa6", "b15a9eb"]
    # The shared pitch train was rebuilt from v1 blob 35423ab (README note); v1 itself is exact.
    assert git_blob_id((bench_dir / "v1/sound_pitch_comparison/train.csv").read_bytes()).startswith("35423ab")


def test_upstream_url(monkeypatch):
    monkeypatch.delenv("ITH_AUDITORYBENCH_UPSTREAM", raising=False)
    assert DEFAULT_UPSTREAM_TEMPLATE == "https://raw.githubusercontent.com/HJ-Ok/AudioBERT/{commit}/{path}"
    assert upstream_url(PINNED_FILES[5]) == (
        "https://raw.githubusercontent.com/HJ-Ok/AudioBERT/"
        "92ea6b356b9ee247f8541cd1fd919fbe0d990b23/dataset/sound_pitch_comparsion_dev.csv"
    )
    monkeypatch.setenv("ITH_AUDITORYBENCH_UPSTREAM", "file:///x/{path}")
    with pytest.raises(ConfigError, match=r"ITH_AUDITORYBENCH_UPSTREAM must be a URL template containing"):
        upstream_url(PINNED_FILES[0])


def test_locate_prefers_explicit_dir_then_env(monkeypatch, tmp_path):
    monkeypatch.setenv("ITH_AUDITORYBENCH_DIR", str(tmp_path / "from-env"))
    monkeypatch.setenv("ITH_AUDITORYBENCH_UPSTREAM", f"file://{tmp_path}/nowhere/{{commit}}/{{path}}")
    assert locate(str(tmp_path / "explicit")) == str(tmp_path / "explicit")
    assert locate("memory://bench") == "memory://bench"
    assert locate() == str(tmp_path / "from-env")


@pytest.fixture()
def fake_upstream(tmp_path, bench_dir, monkeypatch):
    """The shared files laid out as `<root>/<commit>/<upstream path>`, served through file://."""
    root = tmp_path / "upstream"
    for f in PINNED_FILES:
        target = root / f.commit / f.path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(bench_dir / f.local_path, target)
    monkeypatch.delenv("ITH_AUDITORYBENCH_DIR", raising=False)
    monkeypatch.setenv("ITH_AUDITORYBENCH_UPSTREAM", f"file://{root}/{{commit}}/{{path}}")
    return root


def _cache_files(cache: Path) -> list[str]:
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file()) if cache.exists() else []


def test_locate_downloads_verifies_and_reuses_cache(fake_upstream, tmp_path, bench_dir, monkeypatch):
    monkeypatch.setenv("ITH_HOME", str(tmp_path / "home"))
    cache = tmp_path / "home" / "data" / "auditorybench"
    assert locate() == str(cache)
    assert _cache_files(cache) == sorted(f.local_path for f in PINNED_FILES)
    for f in PINNED_FILES:
        assert (cache / f.local_path).read_bytes() == (bench_dir / f.local_path).read_bytes()
    result = ingest(str(cache))
    assert {f"{p['task']}/{p['split']}": p["verified_by"] for p in result.provenance} == VERIFIED_BY
    assert [c["rows_in"] for c in result.counts.values()] == list(README_ROWS.values())

    # Second call: nothing is downloaded (the upstream is gone) and the cached files are untouched.
    mtimes = {p: os.stat(cache / p).st_mtime_ns for p in _cache_files(cache)}
    shutil.rmtree(fake_upstream)
    assert locate(cache_dir=str(cache)) == str(cache)
    assert {p: os.stat(cache / p).st_mtime_ns for p in _cache_files(cache)} == mtimes


def test_locate_replaces_a_damaged_cached_file(fake_upstream, tmp_path, bench_dir):
    cache = tmp_path / "cache"
    locate(cache_dir=str(cache))
    damaged = cache / "animal_sound_recognition" / "dev.csv"
    damaged.write_bytes(damaged.read_bytes()[:-200])
    locate(cache_dir=str(cache))
    assert damaged.read_bytes() == (bench_dir / "animal_sound_recognition" / "dev.csv").read_bytes()


def test_corrupt_blob_pinned_download_fails_and_is_not_kept(fake_upstream, tmp_path):
    pinned = next(f for f in PINNED_FILES if (f.task, f.split) == ("pitch", "dev"))
    source = fake_upstream / pinned.commit / pinned.path
    data = source.read_bytes()
    source.write_bytes(data.replace(b"higher", b"HIGHER", 1))
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as info:
        locate(cache_dir=str(cache))
    message = str(info.value)
    assert "sound_pitch_comparison/dev.csv" in message and str(source) in message
    assert f"sha256 expected {pinned.sha256}, got " in message and "not kept" in message
    # Same header and row count: only the content hash can tell (row-count checks could not).
    assert "columns ['sentence', 'answer', 'span1', 'span2'] and 1178 data rows" in message
    # Every other file was fetched, verified and kept; neither the failed one nor a temp file remains.
    assert _cache_files(cache) == sorted(f.local_path for f in PINNED_FILES if f != pinned)


def test_corrupt_rows_download_fails_and_is_not_kept(fake_upstream, tmp_path):
    pinned = next(f for f in PINNED_FILES if (f.task, f.split) == ("animal", "dev"))
    source = fake_upstream / pinned.commit / pinned.path
    source.write_bytes(source.read_bytes().rsplit(b"\n", 2)[0] + b"\n")
    cache = tmp_path / "cache"
    with pytest.raises(
        DataError,
        match=r"sha256 expected .* the file has columns \[.*\] and 591 data rows "
        r"\(expected \[.*\] and 592\)",
    ) as info:
        locate(cache_dir=str(cache))
    assert str(source) in str(info.value)
    assert _cache_files(cache) == sorted(f.local_path for f in PINNED_FILES if f != pinned)


def test_missing_upstream_file_is_a_data_error(fake_upstream, tmp_path):
    shutil.rmtree(fake_upstream / PINNED_FILES[0].commit)
    with pytest.raises(DataError, match="animal_sound_recognition/train.csv: download from file://"):
        locate(cache_dir=str(tmp_path / "cache"))
    assert _cache_files(tmp_path / "cache") == sorted(f.local_path for f in PINNED_FILES[1:])


def test_every_failed_download_is_named_in_one_error(fake_upstream, tmp_path):
    broken = [f for f in PINNED_FILES if f.split in ("dev", "wiki")]
    for f in broken:
        source = fake_upstream / f.commit / f.path
        source.write_bytes(source.read_bytes()[:-10])
    with pytest.raises(DataError) as info:
        locate(cache_dir=str(tmp_path / "cache"))
    lines = str(info.value).splitlines()
    assert lines[0] == "4 of 8 pinned AuditoryBench files could not be fetched:"
    assert [line.split(":")[0] for line in lines[1:]] == [f"  - {f.local_path}" for f in broken]
    assert all("failed verification: sha256 expected" in line for line in lines[1:])


def test_interrupted_write_leaves_no_partial_file(fake_upstream, tmp_path, monkeypatch):
    import ith_core.data.auditorybench as auditorybench

    def fail_rename(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(auditorybench.os, "replace", fail_rename)
    with pytest.raises(OSError, match="disk full"):
        locate(cache_dir=str(tmp_path / "cache"))
    assert _cache_files(tmp_path / "cache") == []


# --- the verified home and what the files are ----------------------------------------------------


def _pinned_copy(bench_dir: Path, root: Path) -> Path:
    for f in PINNED_FILES:
        (root / f.local_path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(bench_dir / f.local_path, root / f.local_path)
    return root


@pytest.fixture()
def no_network(tmp_path, monkeypatch):
    """No $ITH_AUDITORYBENCH_DIR, an empty ITH_HOME and an upstream that is not there."""
    monkeypatch.delenv("ITH_AUDITORYBENCH_DIR", raising=False)
    monkeypatch.setenv("ITH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ITH_AUDITORYBENCH_UPSTREAM", f"file://{tmp_path}/no-upstream/{{commit}}/{{path}}")
    return Path(home_dir())


def test_fetch_from_a_copy_keeps_only_verified_files_then_locate_reads_the_home(no_network, tmp_path, bench_dir):
    copy = _pinned_copy(bench_dir, tmp_path / "copy")
    modified = copy / "sound_pitch_comparison" / "dev.csv"
    original = modified.read_bytes()
    modified.write_bytes(original.replace(b"higher", b"HIGHER", 1))
    with pytest.raises(
        DataError,
        match=r"sound_pitch_comparison/dev.csv: copied from .* failed verification: "
        r"sha256 expected .*not kept",
    ):
        fetch(str(copy))
    status = folder_status(str(no_network))
    assert status.pop("pitch/dev") == "missing" and set(status.values()) == {"verified"}

    modified.write_bytes(original)
    result = fetch(str(copy))
    assert result["home"] == str(no_network)
    assert sorted(e["status"] for e in result["files"]) == ["copied"] + ["verified"] * 7
    assert set(folder_status(str(no_network)).values()) == {"verified"}
    # Every entry point's lookup finds the home before the (unreachable) network.
    assert locate() == str(no_network)
    assert {p["verified_by"] for p in ingest(locate()).provenance} == {"sha256"}


def test_without_any_copy_the_download_error_says_how_to_fill_the_home(no_network):
    with pytest.raises(DataError) as info:
        locate()
    message = str(info.value)
    assert message.startswith("8 of 8 pinned AuditoryBench files could not be fetched:")
    assert "`ith data fetch --from DIR`" in message and not no_network.exists()


def test_content_id_names_what_the_files_are_not_where(no_network, tmp_path, bench_dir, monkeypatch):
    assert content_id() == "pinned"  # the home or a verified download hold only the pinned files
    copy = _pinned_copy(bench_dir, tmp_path / "copy")
    assert content_id(str(bench_dir)) == content_id(str(copy)) == "pinned"
    changed = copy / "sound_pitch_comparison" / "wiki.csv"
    changed.write_bytes(changed.read_bytes() + b"\n")
    modified = content_id(str(copy))
    assert modified.startswith("sha256:") and content_id(str(copy), tasks=("animal",)) == "pinned"
    monkeypatch.setenv("ITH_AUDITORYBENCH_DIR", str(copy))
    assert content_id() == modified
    changed.unlink()  # a missing file is another difference, for ingestion to name
    assert content_id(str(copy)) not in ("pinned", modified)
