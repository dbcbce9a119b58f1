"""The code stays formatted, lint-clean and strictly typed (ruff and mypy run as tests)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=240
    )


@pytest.mark.timeout(60)
def test_ruff_lint_and_format() -> None:
    if shutil.which("ruff") is None and run("ruff", "--version").returncode != 0:
        pytest.skip("ruff is not installed (it is in the test extra)")
    lint = run("ruff", "check", ".")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    fmt = run("ruff", "format", "--check", ".")
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


@pytest.mark.timeout(250)
def test_mypy_strict() -> None:
    if run("mypy", "--version").returncode != 0:
        pytest.skip("mypy is not installed (it is in the test extra)")
    result = run("mypy", "blackboard")
    assert result.returncode == 0, result.stdout + result.stderr
