"""A tiny worker process for the fault and race tests: `python -m tests.support.worker MODE ...`.

    drain  claim batches of KIND and complete them until the board has at least --expect items
           of KIND and none unfinished; append "id token" per completion to --out (flushed line
           by line); touches --ready once connected
    hang   claim one item of KIND, write "id token" to --out (atomically, by rename) and then
           block forever, as a worker whose handler hangs; the test kill -9's it

Run with the repo root as cwd (so `tests` imports) and `sys.executable`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import anyio

from blackboard import Board, LeaseLost, Status

REPO = Path(__file__).resolve().parents[2]
UNFINISHED = (Status.OPEN, Status.CLAIMED, Status.FAILED, Status.WAITING)


async def unfinished(board: Board, kind: str, expect: int = 0) -> int:
    """Items of `kind` not finished yet (at least `expect` minus those on the board)."""
    stats = (await board.stats()).kinds.get(kind)
    if stats is None:
        return expect
    left = sum(stats.by_status.get(s, 0) for s in UNFINISHED)
    return max(left, expect - sum(stats.by_status.values()))


async def drain(board: Board, args: argparse.Namespace, out: TextIO) -> None:
    agent = f"worker-{os.getpid()}"
    if args.ready:
        await anyio.Path(args.ready).touch()
    while True:
        claims, _ = await board.claim_with_due(agent, [args.kind], n=args.batch, lease=args.lease)
        for c in claims:
            try:
                await board.complete(c, {"by": agent})
            except LeaseLost as e:  # the tests lease for longer than they run: a broken claim
                sys.exit(f"fenced out: {e}")
            out.write(f"{c.id} {c.token}\n")
        if claims:
            continue
        if await unfinished(board, args.kind, args.expect) == 0:
            return
        await board.wait_for_work([args.kind], timeout=0.2)


def publish(path: str, text: str) -> None:
    """Write `text` to `path` so a reader sees all of it or no file (write, then rename)."""
    tmp = Path(path + ".tmp")
    tmp.write_text(text)
    tmp.rename(path)


async def hang(board: Board, args: argparse.Namespace, out: TextIO) -> None:
    agent = f"hung-{os.getpid()}"
    while True:
        claims = await board.claim(agent, [args.kind], n=1, lease=args.lease)
        if claims:
            break
        await board.wait_for_work([args.kind], timeout=1.0)
    await anyio.to_thread.run_sync(publish, args.out, f"{claims[0].id} {claims[0].token}\n")
    await anyio.sleep_forever()


async def main(args: argparse.Namespace, out: TextIO) -> None:
    async with await Board.connect(args.url, board=args.board) as board:
        await (drain if args.mode == "drain" else hang)(board, args, out)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.support.worker")
    p.add_argument("mode", choices=["drain", "hang"])
    p.add_argument("--url", required=True)
    p.add_argument("--board", required=True)
    p.add_argument("--kind", required=True)
    p.add_argument("--out", required=True, help="file the claimed/completed ids go to")
    p.add_argument("--lease", type=float, default=30.0)
    p.add_argument("--batch", type=int, default=10)
    p.add_argument("--expect", type=int, default=0, help="drain: wait for this many items")
    p.add_argument("--ready", help="drain: touch this file once connected")
    return p.parse_args(argv)


async def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `predicate` (cheap, local) until true; fail naming `what` after `timeout` s."""
    with anyio.move_on_after(timeout):
        while True:
            if predicate():
                return
            await anyio.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    """Kill (by PID) the processes this test started that are still running."""
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(10)


def spawn(mode: str, log: Path, **options: object) -> subprocess.Popen[bytes]:
    """Start a worker process (repo root as cwd and on PYTHONPATH); its output goes to `log`."""
    argv = [sys.executable, "-m", "tests.support.worker", mode]
    for name, value in options.items():
        argv += [f"--{name}", str(value)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with open(log, "wb") as f:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(argv, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT)


if __name__ == "__main__":
    options = parse()
    if options.mode == "drain":
        with open(options.out, "a", buffering=1) as lines:  # line-buffered: flushed per id
            anyio.run(main, options, lines)
    else:
        anyio.run(main, options, sys.stdout)
