"""Running an agent folder (a pack) through a real daemon and reading back what happened."""

from __future__ import annotations

import importlib.util
import itertools
import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
from prometheus_client import generate_latest

from blackboard import Board
from blackboard.daemon import Daemon
from blackboard.models import Item, TreeNode, UsageTotals
from blackboard.settings import Settings

ROOT = Path(__file__).parent.parent.parent
PACKS = ROOT / "agents"
_boards = itertools.count()


def pack_module(pack: str, filename: str) -> ModuleType:
    """A Python file of a pack, imported on its own (to test its functions without a daemon)."""
    path = PACKS / pack / filename
    spec = importlib.util.spec_from_file_location(f"pack_{pack}_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class PackRun:
    goal: Item  # as it ended
    tree: TreeNode
    usage: UsageTotals
    metrics: str = ""  # the daemon's Prometheus exposition at the end
    board: str = ""  # the board's name (for reading its audit log, say)

    def metric(self, name: str, **labels: str) -> float:
        """The value of one sample of `metrics` (0 when absent)."""
        from prometheus_client.parser import text_string_to_metric_families

        for family in text_string_to_metric_families(self.metrics):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return float(sample.value)
        return 0.0

    @property
    def items(self) -> list[Item]:
        return self.tree.walk()

    def of_kind(self, kind: str) -> list[Item]:
        return [it for it in self.items if it.kind == kind]

    def overlapping(self, items: list[Item]) -> bool:
        """All of `items` were being handled at one moment (claimed before any of them finished)."""
        return max(it.claimed_at or 0 for it in items) < min(it.finished_at or 0 for it in items)


def daemon_settings(board_url: str, board: str, agents: list[Path], **settings: Any) -> Settings:
    """A test daemon's settings: no HTTP, no entry points, no reload, quiet; `settings` over them."""
    defaults: dict[str, Any] = {"http": False, "entry_points": False, "reload": False, "log_level": "warning"}
    return Settings(url=board_url, board=board, agents=agents, **{**defaults, **settings})


async def run_pack(
    board_url: str,
    folders: list[Path],
    kind: str,
    payload: Any,
    *,
    timeout: float = 60,
    actor: str | None = None,
    **settings: Any,
) -> PackRun:
    """Start a daemon on `folders`, post one goal, run until the board is idle, return its tree."""
    name = f"pack-{os.getpid()}-{next(_boards)}"
    daemon = Daemon(daemon_settings(board_url, name, folders, **settings), until_idle=True)
    with anyio.fail_after(timeout):
        async with anyio.create_task_group() as tg:
            await tg.start(daemon.run)
            async with await Board.connect(board_url, board=name) as board:
                goal = await board.post(kind, payload, actor=actor)
    metrics = generate_latest(daemon.metrics.registry).decode()
    async with await Board.connect(board_url, board=name) as board:
        tree = await board.tree(goal.id)
        return PackRun(tree.item, tree, await board.usage(goal.id), metrics, name)
