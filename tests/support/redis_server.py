"""Real `redis-server` processes for tests: started on free ports in temp dirs, stopped by PID.

Never touches a Redis the machine already runs. `require()` skips a test where redis-server is
missing, and fails it instead when BLACKBOARD_REQUIRE_REDIS=1 (set by .ci/run).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REQUIRE_ENV = "BLACKBOARD_REQUIRE_REDIS"


def binary() -> str | None:
    return shutil.which("redis-server")


def require() -> str:
    """Path of redis-server, or skip (fail under BLACKBOARD_REQUIRE_REDIS=1)."""
    path = binary()
    if path is None:
        reason = "redis-server is not installed (Debian package redis-server); real-Redis lane skipped"
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(reason + f", but {REQUIRE_ENV}=1 requires it")
        pytest.skip(reason)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.02, what: str = "condition"):
    """Poll `predicate` until it returns truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class RedisServer:
    """One redis-server process. `restart()` keeps the port and the data dir (AOF survives)."""

    workdir: Path
    port: int = field(default_factory=free_port)
    appendonly: bool = False
    cluster: bool = False
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> RedisServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = [
            require(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.workdir),
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            str(self.workdir / "redis.log"),
        ]
        if self.appendonly:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        if self.cluster:
            args += [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
            ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: _ping(self.port) or self.proc.poll() is not None, 10, what="redis-server")
        if self.proc.poll() is not None:
            raise RuntimeError(f"redis-server exited: {(self.workdir / 'redis.log').read_text()[-2000:]}")
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


def free_cluster_port() -> int:
    """A free port a cluster node can use: at most 55535, with its bus port (+10000) free too.

    `free_port()` may return a port above 55535, which redis-server refuses in cluster mode
    ("Redis port number too high").
    """
    for _ in range(200):
        port = free_port()
        if port > 55535:
            continue
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair (port, port + 10000) found for a cluster node")


def start_cluster(workdir: Path, masters: int = 3) -> list[RedisServer]:
    """A Redis Cluster of `masters` local nodes (no replicas, slots spread evenly), on ports
    cluster mode accepts (see `free_cluster_port`); nodes started are stopped if forming fails."""
    nodes: list[RedisServer] = []
    try:
        for i in range(masters):
            nodes.append(RedisServer(workdir / f"node{i}", port=free_cluster_port(), cluster=True).start())
        cli = shutil.which("redis-cli")
        assert cli, "redis-cli is needed to form a cluster"
        subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in nodes),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=30,
        )

        def ok() -> bool:
            for n in nodes:
                out = subprocess.run(
                    [cli, "-p", str(n.port), "cluster", "info"], capture_output=True, text=True, timeout=5
                ).stdout
                if "cluster_state:ok" not in out:
                    return False
            return True

        wait_until(ok, 20, 0.1, "cluster_state:ok on every node")
    except BaseException:
        for n in nodes:
            n.stop()
        raise
    return nodes
