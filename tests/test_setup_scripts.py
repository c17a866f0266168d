"""scripts/setup-browser.sh: installs chromium with apt-get only as root, never through sudo."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "setup-browser.sh"


def _stub(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


@pytest.mark.parametrize("uid", ["0", "1000"])
def test_browser_setup_uses_no_sudo(tmp_path, uid):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    _stub(bin_dir, "id", f"echo {uid}")
    _stub(bin_dir, "sudo", f'echo "sudo $*" >> {calls}')
    _stub(bin_dir, "apt-get", f'echo "apt-get $*" >> {calls}')
    done = subprocess.run(
        ["/bin/bash", str(SCRIPT)], env={"PATH": str(bin_dir)}, capture_output=True, text=True, timeout=60
    )
    made = calls.read_text().splitlines() if calls.exists() else []
    assert not any(c.startswith("sudo") for c in made)
    if uid == "0":
        assert done.returncode == 0, done.stderr
        assert made[0] == "apt-get update -qq" and made[1].startswith("apt-get install -y -qq chromium chromium-driver")
    else:
        assert done.returncode == 1 and made == []
        assert "needs chromium and chromedriver" in done.stderr
        assert "sudo apt-get install -y chromium chromium-driver fonts-dejavu-core" in done.stderr
