"""`blackboard audit tail | verify | export`: the board's tamper-evident audit log.

On a sharded board each shard has its own chain and its own exported files (see
`blackboard.audit`): `tail` merges the shards by time and shows each record's shard, `verify`
checks every shard's chain and names the shard of a break, `export` exports every shard.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from blackboard.cli.common import BoardName, Json, Url, app, connect, console, echo_json, err, run_async

if TYPE_CHECKING:
    from blackboard.audit import Break, Chain
    from blackboard.board import Board

audit_app = typer.Typer(
    help="The audit log: one hash-chained record per state change, exported to JSONL files.",
    no_args_is_help=True,
)
app.add_typer(audit_app, name="audit")

KeyFile = Annotated[
    Path | None,
    typer.Option(
        "--key-file",
        help="File holding the HMAC key of the exported files (default: $BLACKBOARD_AUDIT_KEY).",
    ),
]


def _key(key_file: Path | None) -> bytes | None:
    if key_file is not None:
        return key_file.read_bytes().strip()
    key = os.environ.get("BLACKBOARD_AUDIT_KEY")
    return key.encode() if key else None


@audit_app.command("tail")
def tail(
    n: Annotated[int, typer.Option("-n", min=1, help="How many of the newest records.")] = 20,
    url: Url = "memory://",
    board: BoardName = "default",
    as_json: Json = False,
) -> None:
    """Show the newest audit records still in Redis (exported ones are in the files)."""
    from blackboard import audit

    async def main() -> list[audit.AuditRecord]:
        async with await connect(url, board) as b:
            return await audit.tail(b, n)

    found = run_async(main)
    sharded = any(r.shard is not None for r in found)
    if as_json:
        echo_json([{"shard": r.shard, **r.chained()} if sharded else r.chained() for r in found])
        return
    table = Table(
        *(["shard"] if sharded else []), "seq", "at", "op", "id", "kind", "actor", "daemon", "digest"
    )
    for r in found:
        row = [str(r.seq), str(r.at), r.op, r.id, r.kind, escape(r.actor), r.daemon, r.digest[:12]]
        table.add_row(*([str(r.shard)] if sharded else []), *row)
    console.print(table)


@audit_app.command("verify")
def verify(
    files: Annotated[
        list[Path] | None,
        typer.Option(
            "--from",
            help="Exported audit files to verify first (in order; on a sharded board, each "
            "shard's in order, told apart by their names). Repeatable.",
        ),
    ] = None,
    key_file: KeyFile = None,
    url: Url = "memory://",
    board: BoardName = "default",
) -> None:
    """Check the chain: the given files, then the records in Redis continuing them (every
    shard's, on a sharded board). Exits 1 naming the first record that fails (deleted, edited,
    inserted or reordered), and its shard."""
    paths = list(files or [])
    for path in paths:
        if not path.is_file():
            err.print(f"error: --from: no such file: {path}")
            raise typer.Exit(2)
    key = _key(key_file)

    async def main() -> tuple[int, list[tuple[int, Break | None, Chain, int]]]:
        async with await connect(url, board) as b:
            series = _series(b, paths)
            return b.shards, [await _verify_shard(b, s, files, key) for s, files in enumerate(series)]

    shards, results = run_async(main)
    broken = [bad for _, bad, _, _ in results if bad is not None]
    for bad in broken:
        err.print(f"audit log broken at {bad}")
    if broken:
        raise typer.Exit(1)
    for shard, _, end, started in results:
        origin = f"record {started}" if started else "the last exported record"
        where = "" if shards == 1 else f"shard {shard}: "
        # one line a shard, unwrapped (the unsharded line stays exactly as it was)
        text = f"audit log verified: {where}records from {origin} to {end.seq}, chain intact"
        console.print(text, soft_wrap=shards > 1)


def _series(b: Board, paths: list[Path]) -> list[list[Path]]:
    """`paths` per shard, in the order given. On a sharded board a file whose name is not of
    one of its shards is refused (exit 2); an unsharded board's file names aren't read."""
    from blackboard.audit_export import parse_segment
    from blackboard.errors import InvalidInput

    if b.shards == 1:
        return [paths]
    series: list[list[Path]] = [[] for _ in range(b.shards)]
    for path in paths:
        seg = parse_segment(path)
        if seg is None or seg.board != b.name or seg.shard is None or seg.shard >= b.shards:
            raise InvalidInput(
                "--from",
                f"{path} is not named as an audit file of a shard of board {b.name!r} "
                f"(audit-{b.name}~<shard>-<seq>.jsonl)",
            )
        series[seg.shard].append(path)
    return series


async def _verify_shard(
    b: Board, shard: int, paths: list[Path], key: bytes | None
) -> tuple[int, Break | None, Chain, int]:
    """(shard, first break, where the chain ends, seq the files start at) of one shard: its
    files, then its records in Redis, continuing them when the files end where Redis starts."""
    from blackboard import audit
    from blackboard.audit_export import verify_files

    keys = b.shard_keys[shard]
    chain, started = None, 0
    if paths:
        bad, state = verify_files(paths, key, shard=keys.shard)
        if bad:
            return shard, bad, state.chain, state.started_at
        chain, started = state.chain, state.started_at
    if chain is not None and chain.seq != (await audit.exported(b, keys=keys)).seq:
        # the files end elsewhere than where Redis's records start: check Redis alone
        chain = None
    bad, end = await audit.verify_board(b, chain, keys=keys)
    return shard, bad, end, started


@audit_app.command("export")
def export(
    directory: Annotated[Path, typer.Option("--dir", help="Folder for the JSONL segment files.")],
    key_file: KeyFile = None,
    url: Url = "memory://",
    board: BoardName = "default",
) -> None:
    """Move the audit records now in Redis into JSONL files (fsynced before Redis is trimmed)."""
    from blackboard.audit_export import AuditExporter

    async def main() -> int:
        async with await connect(url, board) as b:
            return await AuditExporter(b, directory, _key(key_file)).export()

    console.print(f"exported {run_async(main)} audit records to {directory}")
