"""The README's Python examples run as written, and its commands match CI."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()


@pytest.mark.parametrize("block", re.findall(r"```python\n(.*?)```", README, re.S))
def test_readme_python_blocks_run(block: str, capsys: pytest.CaptureFixture[str]) -> None:
    exec(compile(block, "README.md", "exec"), {"__name__": "readme"})
    assert capsys.readouterr().out.strip()  # each example prints what it shows


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert "test-command" in ci
    marked = re.search(r"<!-- test-command -->\n```sh\n(.+?)\n```\n<!-- /test-command -->", README, re.S)
    assert marked and "pytest" in marked.group(1)


def test_readme_documents_every_setting_and_metric() -> None:
    from blackboard.metrics import Metrics
    from blackboard.settings import Settings

    for name in Settings.model_fields:
        assert f"BLACKBOARD_{name.upper()}" in README, f"setting {name} missing from README"
    for attr, metric in vars(Metrics()).items():
        if attr != "registry":
            family = next(iter(metric.collect()))
            suffix = "_total" if family.type == "counter" else ""
            assert f"`{family.name}{suffix}`" in README, f"metric {family.name} missing from README"
