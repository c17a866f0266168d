"""The measured numbers of README.md and docs/ are the recorded ones: every `<!-- results:NAME -->`
block is exactly what benchmarks/results_table.py prints from benchmarks/results/ (no number typed
by hand), and every block the script knows stands in its target file (`TARGETS`), once, and
nowhere else."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import results_table  # noqa: E402


def test_every_results_block_is_in_its_file_and_current():
    assert set(results_table.TARGETS) == set(results_table.BLOCKS)
    for name in set(results_table.TARGETS.values()):
        text = (REPO / name).read_text()
        held = [m.group("name") for m in results_table.BLOCK.finditer(text)]
        assert sorted(held) == sorted(b for b, f in results_table.TARGETS.items() if f == name), (name, held)
        assert results_table.stale_blocks(text) == [], (
            f"{name}'s results blocks differ from benchmarks/results_table.py's output: run "
            "`.venv/bin/python benchmarks/results_table.py --write` (after re-recording what moved)"
        )
    assert results_table.problems() == []


def test_readme_keeps_a_headline_and_no_full_table():
    held = [m.group("name") for m in results_table.BLOCK.finditer((REPO / "README.md").read_text())]
    # Short blocks only: the headline, the two mechanisms' paragraph and the rehearsal's; full tables live in docs/.
    assert held == ["headline", "mechanisms-headline", "rehearsal"]


def _copy_docs(tmp_path: Path) -> Path:
    (tmp_path / "docs").mkdir()
    for name in results_table.documents():
        shutil.copy(REPO / name, tmp_path / name)
    return tmp_path


def test_check_names_a_stale_block_in_any_file(tmp_path):
    root = _copy_docs(tmp_path)
    for name in sorted(set(results_table.TARGETS.values())):
        text = (root / name).read_text()
        m = next(results_table.BLOCK.finditer(text))
        edited = text[: m.start("body")] + m.group("body").replace("|", "¦", 1) + text[m.end("body") :]
        assert results_table.stale_blocks(edited) == [m.group("name")]
        assert results_table.rewrite(edited) == text
        (root / name).write_text(edited)
        assert results_table.problems(root) == [f"{name}: {m.group('name')} is out of date"]
        assert results_table.write(root=root) == [name]
        assert (root / name).read_text() == text and results_table.problems(root) == []
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "results_table.py"), "--check"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr


def test_check_names_a_block_missing_or_out_of_place(tmp_path):
    root = _copy_docs(tmp_path)
    perf = (root / "docs" / "performance.md").read_text()
    m = next(m for m in results_table.BLOCK.finditer(perf) if m.group("name") == "performance")
    (root / "docs" / "performance.md").write_text(perf[: m.start()] + perf[m.end() :])
    (root / "docs" / "recipe.md").write_text((root / "docs" / "recipe.md").read_text() + "\n" + m.group(0) + "\n")
    assert results_table.problems(root) == [
        "docs/performance.md: lacks the block performance",
        "docs/recipe.md: holds performance, whose place is docs/performance.md",
    ]
