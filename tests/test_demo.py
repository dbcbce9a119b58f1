"""The scripted demo and the CLI around it."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from blackboard.cli import app
from blackboard.demo import run_demo
from blackboard.models import Status

pytestmark = pytest.mark.anyio


def write_files(tmp_path: Path) -> list[Path]:
    a = tmp_path / "a.txt"
    a.write_text("Leases fence writes. Leases expire; fencing tokens grow. tokens tokens tokens")
    b = tmp_path / "b.txt"
    b.write_text("Agents claim items; agents never message agents.")
    return [a, b]


@pytest.mark.timeout(60)
async def test_demo_fans_out_and_joins_through_the_board(board_url: str, tmp_path: Path) -> None:
    buffer = io.StringIO()
    final = await run_demo(board_url, write_files(tmp_path), Console(file=buffer, width=120), top=3)
    assert final.status is Status.DONE
    assert final.result["top"] == [["tokens", 4], ["agents", 3], ["leases", 2]]
    assert final.result["files"] == 2 and len(final.after) == 2
    out = buffer.getvalue()
    assert out.count("claimed   wordcount.map") == 2 and "opened    wordcount.reduce" in out
    assert re.search(r"claimed\s+wordcount.reduce\s+\w+ by reducer", out)
    assert "most frequent" in out


@pytest.mark.timeout(60)
def test_cli_demo_runs_and_reports(tmp_path: Path) -> None:
    files = [str(p) for p in write_files(tmp_path)]
    result = CliRunner().invoke(app, ["demo", *files, "--top", "2"])
    assert result.exit_code == 0, result.output
    assert "tokens" in result.output and "wordcount.reduce" in result.output


def test_cli_demo_rejects_missing_files() -> None:
    result = CliRunner().invoke(app, ["demo", "no/such/file.txt"])
    assert result.exit_code == 2 and "not a file: no/such/file.txt" in result.output


@pytest.mark.timeout(60)
def test_console_script_runs_as_a_subprocess(tmp_path: Path) -> None:
    files = [str(p) for p in write_files(tmp_path)]
    out = subprocess.run(
        [sys.executable, "-m", "blackboard", "demo", *files], capture_output=True, text=True, timeout=50
    )
    assert out.returncode == 0, out.stderr
    assert "most frequent" in out.stdout


def test_version() -> None:
    result = CliRunner().invoke(app, ["version"])
    assert result.exit_code == 0 and result.output.strip() == "0.1.0"
