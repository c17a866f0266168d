"""The README's measured numbers are the recorded ones: every `<!-- results:NAME -->` block is
exactly what benchmarks/results_table.py prints from benchmarks/results/ (no number typed by
hand), and every block the script knows stands in the README."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import results_table  # noqa: E402


def test_every_results_block_is_in_the_readme_and_current():
    text = (REPO / "README.md").read_text()
    names = [m.group("name") for m in results_table.BLOCK.finditer(text)]
    assert sorted(names) == sorted(results_table.BLOCKS), names
    assert results_table.stale_blocks(text) == [], (
        "README.md results blocks differ from benchmarks/results_table.py's output: run "
        "`.venv/bin/python benchmarks/results_table.py --write` (after re-recording what moved)")


def test_check_command_names_a_stale_block(tmp_path, monkeypatch):
    text = (REPO / "README.md").read_text()
    m = next(results_table.BLOCK.finditer(text))
    edited = text[:m.start("body")] + m.group("body").replace("|", "¦", 1) + text[m.end("body"):]
    assert results_table.stale_blocks(edited) == [m.group("name")]
    assert results_table.rewrite(edited) == text
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "results_table.py"), "--check"],
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
