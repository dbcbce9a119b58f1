"""A real Prometheus for tests: its own process on a free port, its TSDB in a temp dir, stopped
by PID. `require()` skips where the Debian `prometheus` package (prometheus, promtool) is missing,
and fails instead under BLACKBOARD_REQUIRE_PROMETHEUS=1 (set by .ci/run).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.redis_server import free_port, wait_until

REQUIRE_ENV = "BLACKBOARD_REQUIRE_PROMETHEUS"


def require(binary: str) -> str:
    """Path of `binary` (prometheus or promtool), or skip (fail under BLACKBOARD_REQUIRE_PROMETHEUS=1)."""
    path = shutil.which(binary)
    if path is None:
        reason = f"{binary} is not installed (Debian package prometheus); Prometheus tests skipped"
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(reason + f", but {REQUIRE_ENV}=1 requires it")
        pytest.skip(reason)
    return path


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require("promtool"), *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=0.5) as r:
            return int(r.status) == 200
    except OSError:
        return False


@dataclass
class Prometheus:
    """One prometheus server running `config` (a prometheus.yml document)."""

    workdir: Path
    config: dict[str, Any]
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        path = self.workdir / "prometheus.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def start(self) -> Prometheus:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "prometheus.yml"
        config.write_text(yaml.safe_dump(self.config, sort_keys=False))
        args = [
            require("prometheus"),
            f"--config.file={config}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]
        with (self.workdir / "prometheus.log").open("wb") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        proc = self.proc
        wait_until(lambda: _ready(self.url) or proc.poll() is not None, 20, 0.05, "prometheus to be ready")
        if proc.poll() is not None:
            raise RuntimeError(f"prometheus exited {proc.returncode}: {self.log}")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None
