"""The README's demo: the daemon with the stock agents, through the CLI runner and as a process."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from blackboard.cli import app

ROOT = Path(__file__).parent.parent


@pytest.mark.timeout(60)
def test_demo_fans_out_joins_and_exits_when_idle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    result = CliRunner().invoke(
        app, ["run", "--demo", "--until-idle", "--port", "0", "--log-level", "warning"]
    )
    assert result.exit_code == 0, result.output
    out = result.output
    files = 1 + len(list((ROOT / "docs").glob("*.md")))
    assert len(re.findall(r"claimed\s+wordcount\.map\s+\S+ by mapper", out)) == files
    # the join opens only after every map item is done
    lines = out.splitlines()
    opened = next(i for i, line in enumerate(lines) if re.search(r"opened\s+wordcount\.reduce", line))
    assert max(i for i, line in enumerate(lines) if re.search(r"done\s+wordcount\.map", line)) < opened
    assert re.search(r"done\s+wordcount\.reduce", out)
    assert "most frequent words" in out and "board" in out


@pytest.mark.timeout(60)
def test_demo_as_a_subprocess_in_a_fresh_folder(tmp_path: Path) -> None:
    # Run from a copy of the stock agents and docs, as a user's checkout would.
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "wordcount.py").write_text((ROOT / "agents" / "wordcount.py").read_text())
    (tmp_path / "README.md").write_text("Leases fence writes. Leases expire. Tokens tokens tokens tokens.")
    out = subprocess.run(
        [sys.executable, "-m", "blackboard", "run", "--demo", "--until-idle", "--port", "0"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert out.returncode == 0, out.stderr
    assert re.search(r"tokens\s+│\s+4", out.stdout) and re.search(r"leases\s+│\s+2", out.stdout)
    assert '"event": "daemon stopped"' in out.stderr  # JSON logs when not on a TTY


def test_demo_without_stock_agents_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["run", "--demo", "--until-idle", "--port", "0", "--no-reload"])
    assert "--demo needs the stock agents" in result.output


def test_version() -> None:
    result = CliRunner().invoke(app, ["version"])
    assert result.exit_code == 0 and result.output.strip() == "0.1.0"
