"""The daemon as a real process for the process-level tests: `python -m blackboard run ...`.

`DaemonProc` starts `blackboard run` with JSON logs going to a file, talks to its HTTP API
(stdlib urllib, run in a worker thread), and is stopped only by its own PID. `gated_plugin`
writes an agent plugin whose handler records what it did to files and blocks until a gate
file appears, so a test decides when work finishes instead of guessing with sleeps.
"""

from __future__ import annotations

import inspect
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anyio

from tests.support.redis_server import free_port

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


async def eventually(
    check: Callable[[], Awaitable[T] | T], timeout: float, what: str, interval: float = 0.05
) -> T:
    """Call (and await) `check()` until it returns something truthy; fail naming `what` after
    `timeout` seconds. This is how the tests wait: on a condition, never on a bare sleep."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await anyio.sleep(interval)


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` in one step (a dot-file first, which the plugin watcher ignores)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


GATED_PLUGIN = '''\
"""Test agent: records each attempt, then waits for the gate file before finishing."""
import os
from pathlib import Path

import anyio

from blackboard import agent

RECORDS = Path({records!r})
GATE = Path({gate!r})


def record(name):
    """Write '<name>' with this process's pid in one step (the test may read it any time)."""
    tmp = RECORDS / ("." + name)
    tmp.write_text(str(os.getpid()))
    os.replace(tmp, RECORDS / name)


@agent(name={name!r}, consumes=[{kind!r}], concurrency={concurrency}, lease={lease})
async def gated(item, ctx):
    tag = f"{{item.id}}.{{item.attempts}}"
    record(tag + ".started")
    while not GATE.exists():
        await anyio.sleep(0.02)
    await anyio.sleep({work})
    record(tag + ".finished")
    return {{"pid": os.getpid(), "attempt": item.attempts}}
'''


@dataclass
class Gated:
    """A gated agent's files: its records folder and its gate."""

    records: Path
    gate: Path

    def open(self) -> None:
        self.gate.touch()

    def _read(self, what: str) -> dict[str, int]:
        # Records are written by rename, so a listed one is complete; '.x' temporaries are skipped.
        return {
            p.name.removesuffix(what): int(p.read_text())
            for p in self.records.glob("*" + what)
            if not p.name.startswith(".")
        }

    def started(self) -> dict[str, int]:
        """'<item id>.<attempt>' -> pid, for every attempt that started."""
        return self._read(".started")

    def finished(self) -> dict[str, int]:
        """'<item id>.<attempt>' -> pid, for every attempt whose handler got to its end."""
        return self._read(".finished")


def gated_plugin(
    folder: Path,
    workdir: Path,
    *,
    name: str,
    kind: str,
    concurrency: int = 1,
    lease: float = 30.0,
    work: float = 0.0,
    gate_open: bool = False,
) -> Gated:
    """Write `<folder>/<name>.py`: an agent that records attempts in `workdir` and waits for a gate."""
    records = workdir / f"{name}-records"
    records.mkdir(parents=True, exist_ok=True)
    g = Gated(records, workdir / f"{name}.gate")
    if gate_open:
        g.open()
    folder.mkdir(parents=True, exist_ok=True)
    source = GATED_PLUGIN.format(
        records=str(records),
        gate=str(g.gate),
        name=name,
        kind=kind,
        concurrency=concurrency,
        lease=lease,
        work=work,
    )
    write_atomically(folder / f"{name}.py", source)
    return g


@dataclass
class DaemonProc:
    """One `blackboard run` process with its HTTP API on a free loopback port."""

    workdir: Path
    url: str
    board: str
    agents: list[Path]
    grace: float = 30.0
    reload: bool = False
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"daemon-{self.port}.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> DaemonProc:
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = [
            sys.executable,
            "-m",
            "blackboard",
            "run",
            "--url",
            self.url,
            "--board",
            self.board,
            *(a for folder in self.agents for a in ("--agents", str(folder))),
            "--grace",
            str(self.grace),
            "--port",
            str(self.port),
            "--log-format",
            "json",
            "--reload" if self.reload else "--no-reload",
        ]
        # Hermetic: none of the caller's BLACKBOARD_* settings, no installed entry-point agents,
        # and a cwd without a blackboard.toml. Short intervals keep presence and reaping prompt.
        # Bytecode is written as in production (plugins get a __pycache__), whatever the caller's
        # PYTHONDONTWRITEBYTECODE says.
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("BLACKBOARD_") and k != "PYTHONDONTWRITEBYTECODE"
        }
        env.update(
            {
                "PYTHONPATH": str(REPO),
                "PYTHONUNBUFFERED": "1",
                "BLACKBOARD_ENTRY_POINTS": "false",
                "BLACKBOARD_PRESENCE_INTERVAL": "0.2",
                "BLACKBOARD_REAP_INTERVAL": "0.5",
                **self.env,
            }
        )
        with open(self.log_path, "ab") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                argv, cwd=self.workdir, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        return self

    # -- the process ----------------------------------------------------------------------

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def send(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def wait_exit(self, timeout: float) -> int:
        """The exit code, or fail (with the log) if it is still running after `timeout` s."""
        assert self.proc is not None
        proc = self.proc
        try:
            return await anyio.to_thread.run_sync(lambda: proc.wait(timeout))
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"daemon {proc.pid} still running after {timeout}s\n{self.log_tail()}"
            ) from None

    def kill(self) -> None:
        """SIGKILL this process (by its PID) if it still runs, and reap it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)

    def stop(self, timeout: float = 15.0) -> None:
        """Teardown: SIGTERM, then SIGKILL if it has not exited after `timeout` s."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    # -- its log --------------------------------------------------------------------------

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return f"--- log of daemon on :{self.port} ---\n" + "\n".join(text.splitlines()[-lines:])

    def log_events(self) -> list[dict[str, Any]]:
        """The JSON log records written so far (lines that are not JSON are skipped)."""
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                out.append(record)
        return out

    # -- its HTTP API ---------------------------------------------------------------------

    def get_sync(self, path: str, timeout: float = 5.0) -> tuple[int | None, str]:
        """(status, body) of GET `path`; (None, reason) when nothing answers."""
        try:
            with urllib.request.urlopen(self.base + path, timeout=timeout) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            with e:
                return e.code, e.read().decode()
        except (OSError, urllib.error.URLError) as e:
            return None, str(e)

    async def get(self, path: str, timeout: float = 5.0) -> tuple[int | None, str]:
        return await anyio.to_thread.run_sync(lambda: self.get_sync(path, timeout))

    async def status(self, path: str) -> int | None:
        return (await self.get(path))[0]

    async def wait_status(self, path: str, status: int, timeout: float = 20.0) -> None:
        async def check() -> bool:
            if not self.alive():
                raise AssertionError(f"daemon exited ({self.proc and self.proc.poll()})\n{self.log_tail()}")
            return await self.status(path) == status

        try:
            await eventually(check, timeout, f"GET {path} -> {status}")
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.log_tail()}") from None

    async def wait_ready(self, timeout: float = 30.0) -> None:
        await self.wait_status("/readyz", 200, timeout)

    async def presence(self) -> list[dict[str, Any]]:
        """This daemon's own presence record (from /v1/agents): its agents and plugin errors."""
        status, body = await self.get("/v1/agents")
        if status != 200:
            return []
        return [d for d in json.loads(body) if d["pid"] == self.pid]

    async def agent_names(self) -> set[str]:
        return {a["name"] for d in await self.presence() for a in d["agents"]}

    async def metric(self, name: str) -> float | None:
        """The value of sample `name` in /metrics (`name` may include its labels, exactly as the
        exposition writes them), or the sum of all its labelled samples; None if absent."""
        status, body = await self.get("/metrics")
        assert status == 200, body
        values = [
            float(line.rsplit(" ", 1)[1])
            for line in body.splitlines()
            if line.startswith((name + " ", name + "{"))
        ]
        return sum(values) if values else None
