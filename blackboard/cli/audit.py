"""`blackboard audit tail | verify | export`: the board's tamper-evident audit log."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from blackboard.cli.common import BoardName, Json, Url, app, connect, console, echo_json, err, run_async

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
    if as_json:
        echo_json([r.chained() for r in found])
        return
    table = Table("seq", "at", "op", "id", "kind", "actor", "daemon", "digest")
    for r in found:
        table.add_row(str(r.seq), str(r.at), r.op, r.id, r.kind, escape(r.actor), r.daemon, r.digest[:12])
    console.print(table)


@audit_app.command("verify")
def verify(
    files: Annotated[
        list[Path] | None,
        typer.Option("--from", help="Exported audit files to verify first (in order). Repeatable."),
    ] = None,
    key_file: KeyFile = None,
    url: Url = "memory://",
    board: BoardName = "default",
) -> None:
    """Check the chain: the given files, then the records in Redis continuing them. Exits 1
    naming the first record that fails (deleted, edited, inserted or reordered)."""
    from blackboard import audit
    from blackboard.audit_export import verify_files

    paths = list(files or [])
    for path in paths:
        if not path.is_file():
            err.print(f"error: --from: no such file: {path}")
            raise typer.Exit(2)

    async def main() -> tuple[audit.Break | None, audit.Chain, int]:
        chain, started = None, 0
        if paths:
            bad, state = verify_files(paths, _key(key_file))
            if bad:
                return bad, state.chain, state.started_at
            chain, started = state.chain, state.started_at
        async with await connect(url, board) as b:
            if chain is not None and chain.seq != (await audit.exported(b)).seq:
                # the files end elsewhere than where Redis's records start: check Redis alone
                chain = None
            bad, end = await audit.verify_board(b, chain)
            return bad, end, started

    bad, end, started = run_async(main)
    if bad is not None:
        err.print(f"audit log broken at {bad}")
        raise typer.Exit(1)
    origin = f"record {started}" if started else "the last exported record"
    console.print(f"audit log verified: records from {origin} to {end.seq}, chain intact")


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
