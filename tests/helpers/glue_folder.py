"""A small GLUE folder in GLUE's own TSV layout, for tests: every task, train and dev.

    root = write_glue_folder(tmp_path / "glue", rows=12)       # 12 data rows per file
    expected = append_bad_rows(root, "qqp", "dev")              # reason -> rows appended

Sentences are drawn (by `seed`) from ones that describe sounds ("a dog barks at the mailman"),
so a span detector has something to find, and plain ones; labels cycle through the task's label
set, so they are balanced; one sentence holds literal double quotes (GLUE files are unquoted).
MNLI gets dev_matched.tsv and dev_mismatched.tsv; CoLA has no header, as upstream.
"""

from __future__ import annotations

import random
from pathlib import Path

SOUND_SENTENCES = (
    "a dog barks at the mailman",
    "the kettle whistles on the stove",
    "thunder rumbles over the hills",
    "a baby cries in the next room",
    "the church bells ring at noon",
    "an owl hoots in the dark forest",
    'the "old" train horn blares twice',
    "rain patters softly on the tin roof",
)
PLAIN_SENTENCES = (
    "the report was finished on time",
    "she bought a new pair of shoes",
    "the committee approved the budget",
    "he reads the paper every morning",
    "the museum opens at nine",
    "prices rose sharply last year",
)

LABELS = {
    "sst2": ("0", "1"),
    "qnli": ("entailment", "not_entailment"),
    "qqp": ("0", "1"),
    "mnli": ("contradiction", "entailment", "neutral"),
    "mrpc": ("0", "1"),
    "cola": ("0", "1"),
}
STSB_SCORES = ("0.000", "1.250", "2.500", "3.800", "5.000")

FOLDERS = {
    "sst2": "SST-2",
    "qnli": "QNLI",
    "qqp": "QQP",
    "mnli": "MNLI",
    "mrpc": "MRPC",
    "stsb": "STS-B",
    "cola": "CoLA",
}
_MNLI_FRONT = "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\tsentence2_parse\tsentence1\tsentence2"
HEADERS = {
    "sst2": "sentence\tlabel",
    "qnli": "index\tquestion\tsentence\tlabel",
    "qqp": "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate",
    "mnli/train": f"{_MNLI_FRONT}\tlabel1\tgold_label",
    "mnli/dev": f"{_MNLI_FRONT}\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label",
    "mrpc": "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String",
    "stsb": "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore",
    "cola": None,
}


def files_of(task: str) -> dict[str, str]:
    """File name per split (MNLI's `dev_mismatched` included), as GLUE names them."""
    if task == "mnli":
        return {"train": "train.tsv", "dev": "dev_matched.tsv", "dev_mismatched": "dev_mismatched.tsv"}
    return {"train": "train.tsv", "dev": "dev.tsv"}


def file_path(root: Path, task: str, split: str) -> Path:
    return Path(root) / FOLDERS[task] / files_of(task)[split]


def header_of(task: str, split: str) -> str | None:
    if task == "mnli":
        return HEADERS["mnli/train" if split == "train" else "mnli/dev"]
    return HEADERS[task]


def label_of(task: str, i: int) -> str:
    return STSB_SCORES[i % len(STSB_SCORES)] if task == "stsb" else LABELS[task][i % len(LABELS[task])]


def row_fields(task: str, split: str, i: int, s1: str, s2: str, label: str) -> list[str]:
    """The fields of data row `i` (0-based) of `task` in GLUE's column order."""
    if task == "sst2":
        return [s1, label]
    if task == "qnli":
        return [str(i), s1, s2, label]
    if task == "qqp":
        return [str(1000 + i), str(2 * i), str(2 * i + 1), s1, s2, label]
    if task == "mnli":
        parses = [f"( {s1} )", f"( {s2} )", f"(ROOT {s1})", f"(ROOT {s2})"]
        votes = [label] if split == "train" else [label] * 5
        return [str(i), str(500 + i), f"{500 + i}e", "fiction", *parses, s1, s2, *votes, label]
    if task == "mrpc":
        return [label, str(10 + i), str(20 + i), s1, s2]
    if task == "stsb":
        return [str(i), "main-captions", "MSRvid", "2012test", str(i), "none", "none", s1, s2, label]
    if task == "cola":
        return ["gj04", label, "" if label == "1" else "*", s1]
    raise ValueError(task)


def write_glue_folder(
    root: Path | str, tasks: tuple[str, ...] | None = None, rows: int | None = None, seed: int = 0
) -> Path:
    """Writes every file of `tasks` (default all seven) with `rows` data rows each (default 12)."""
    root = Path(root)
    rows = 12 if rows is None else rows
    rng = random.Random(seed)
    pool = SOUND_SENTENCES + PLAIN_SENTENCES
    for task in tasks or tuple(FOLDERS):
        for split in files_of(task):
            lines = []
            header = header_of(task, split)
            if header is not None:
                lines.append(header)
            for i in range(rows):
                s1, s2 = rng.choice(pool), rng.choice(pool)
                lines.append("\t".join(row_fields(task, split, i, s1, s2, label_of(task, i))))
            path = file_path(root, task, split)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def append_lines(root: Path, task: str, split: str, lines: list[str]) -> None:
    path = file_path(root, task, split)
    with path.open("a", encoding="utf-8") as out:
        out.write("".join(line + "\n" for line in lines))


def append_bad_rows(root: Path, task: str, split: str) -> dict[str, int]:
    """Appends one row per way a row can be rejected for `task`; returns reason -> rows appended."""
    base = 900
    good = row_fields(task, split, base, "a bell rings", "a horn honks", label_of(task, 0))
    lines, expected = ["\t".join(good[:-1])], {"wrong_field_count": 1}
    sentence_index = good.index("a bell rings")
    empty = list(good)
    empty[sentence_index] = "   "
    lines.append("\t".join(empty))
    expected["empty_sentence"] = 1
    if task == "stsb":
        for bad, reason in (
            ("abc", "score_not_a_number"),
            ("7.5", "score_out_of_range"),
            ("nan", "score_not_a_number"),
        ):
            row = row_fields(task, split, base + 2 + len(lines), "a bell rings", "a horn honks", bad)
            lines.append("\t".join(row))
            expected[reason] = expected.get(reason, 0) + 1
    else:
        lines.append("\t".join(row_fields(task, split, base + 5, "a bell rings", "a horn honks", "maybe")))
        expected["label_not_in_label_set"] = 1
    if task in ("qnli", "qqp", "mnli", "stsb"):
        # Row 0 of the written file has the id of i = 0; this row repeats it.
        lines.append("\t".join(row_fields(task, split, 0, "a cat meows", "a cow moos", label_of(task, 0))))
        expected["duplicate_id"] = 1
    append_lines(root, task, split, lines)
    return expected
