"""`blackboard run` (the daemon, and its demo) and `blackboard init`."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Annotated, Any

import anyio
import typer
from rich.table import Table

from blackboard.cli.common import CLI, _desc, app, console, err, run_async


@app.command()
def run(
    url: Annotated[str | None, typer.Option("--url", "--redis", help=_desc("url"))] = None,
    board: Annotated[str | None, typer.Option(help=_desc("board"))] = None,
    shards: Annotated[int | None, typer.Option(help=_desc("shards"))] = None,
    agents: Annotated[
        list[Path] | None, typer.Option("--agents", help=_desc("agents") + " Repeatable.")
    ] = None,
    grace: Annotated[float | None, typer.Option(help=_desc("grace"))] = None,
    host: Annotated[str | None, typer.Option(help=_desc("host"))] = None,
    port: Annotated[int | None, typer.Option(help=_desc("port"))] = None,
    api_token: Annotated[str | None, typer.Option(help=_desc("api_token"))] = None,
    api_principals: Annotated[str | None, typer.Option(help=_desc("api_principals"))] = None,
    http: Annotated[bool | None, typer.Option("--http/--no-http", help=_desc("http"))] = None,
    reload: Annotated[bool | None, typer.Option("--reload/--no-reload", help=_desc("reload"))] = None,
    entry_points: Annotated[
        bool | None, typer.Option("--entry-points/--no-entry-points", help=_desc("entry_points"))
    ] = None,
    reap_interval: Annotated[float | None, typer.Option(help=_desc("reap_interval"))] = None,
    sweep: Annotated[float | None, typer.Option(help=_desc("sweep"))] = None,
    presence_interval: Annotated[float | None, typer.Option(help=_desc("presence_interval"))] = None,
    strict: Annotated[bool | None, typer.Option("--strict/--open", help=_desc("strict"))] = None,
    log_format: Annotated[str | None, typer.Option(help=_desc("log_format"))] = None,
    log_level: Annotated[str | None, typer.Option(help=_desc("log_level"))] = None,
    config: Annotated[
        Path | None, typer.Option(help="Config file (default ./blackboard.toml if present).")
    ] = None,
    demo: Annotated[
        bool, typer.Option(help="Post the word-count demo goal over README.md and docs/*.md and show it run.")
    ] = False,
    until_idle: Annotated[bool, typer.Option(help="Exit once the board has no unfinished items.")] = False,
    goal: Annotated[
        Path | None,
        typer.Option(help="Post this goal template (YAML/JSON with kind and payload) and follow it."),
    ] = None,
    model: Annotated[str | None, typer.Option(help=_desc("model"))] = None,
    models: Annotated[str | None, typer.Option(help=_desc("models"))] = None,
    llm_limits: Annotated[str | None, typer.Option(help=_desc("llm_limits"))] = None,
    policies: Annotated[
        list[Path] | None, typer.Option("--policies", help=_desc("policies") + " Repeatable.")
    ] = None,
    audit_dir: Annotated[Path | None, typer.Option(help=_desc("audit_dir"))] = None,
    audit_interval: Annotated[float | None, typer.Option(help=_desc("audit_interval"))] = None,
    retention: Annotated[float | None, typer.Option(help=_desc("retention"))] = None,
    audit_key: Annotated[
        str | None, typer.Option(help=_desc("audit_key") + " Prefer BLACKBOARD_AUDIT_KEY (ps shows flags).")
    ] = None,
    otel_endpoint: Annotated[str | None, typer.Option(help=_desc("otel_endpoint"))] = None,
) -> None:
    """Run the daemon: load agent plugins, claim and run work, serve HTTP, until SIGTERM/SIGINT.

    Settings come from these flags, then BLACKBOARD_* environment variables (e.g.
    BLACKBOARD_URL, BLACKBOARD_GRACE), then blackboard.toml.
    """
    from pydantic import ValidationError

    from blackboard import logs
    from blackboard.daemon import Daemon, check_bind
    from blackboard.settings import load_settings

    if config is not None and not config.is_file():
        err.print(f"error: --config: no such file: {config}")
        raise typer.Exit(2)
    try:
        settings = load_settings(
            config,
            url=url,
            board=board,
            shards=shards,
            agents=agents,
            grace=grace,
            host=host,
            port=port,
            api_token=api_token,
            api_principals=json_flag("--api-principals", api_principals),
            http=http,
            reload=reload,
            strict=strict,
            log_format=log_format,
            log_level=log_level,
            entry_points=entry_points,
            reap_interval=reap_interval,
            sweep=sweep,
            presence_interval=presence_interval,
            model=model,
            models=json_flag("--models", models),
            llm_limits=json_flag("--llm-limits", llm_limits),
            policies=policies,
            audit_dir=audit_dir,
            audit_interval=audit_interval,
            retention=retention,
            audit_key=audit_key,
            otel_endpoint=otel_endpoint,
        )
    except ValidationError as e:
        first = e.errors()[0]
        err.print(f"error: {'.'.join(str(p) for p in first['loc'])}: {first['msg']}")
        raise typer.Exit(2) from None
    logs.configure(settings.log_format, settings.log_level)
    template = load_goal(goal) if goal is not None else None

    async def main() -> None:
        check_bind(settings)
        daemon = Daemon(settings, until_idle=until_idle)  # it turns tracing on, if configured
        async with anyio.create_task_group() as tg:
            await tg.start(daemon.run)
            followers = []
            if demo:
                followers.append(partial(run_demo, daemon))
            if template is not None:
                followers.append(partial(run_goal, daemon, *template))
            if followers:
                tg.start_soon(follow_until_stopped, daemon, followers)

    run_async(main)


FOLLOW_GRACE = 10.0  # seconds a goal's follower may finish printing once the daemon stops


async def follow_until_stopped(daemon: Any, followers: list[Any]) -> None:
    """Run the goal followers; once the daemon begins to stop, give them FOLLOW_GRACE seconds
    (an idle stop: they are printing the tree) before cancelling them (a signal: the goal may
    never finish)."""
    done = anyio.Event()

    async def follow(tg: Any) -> None:
        async with anyio.create_task_group() as inner:
            for f in followers:
                inner.start_soon(f)
        done.set()
        tg.cancel_scope.cancel()

    async with anyio.create_task_group() as tg:
        tg.start_soon(follow, tg)
        await daemon.wait_stopping()
        with anyio.move_on_after(FOLLOW_GRACE):
            await done.wait()
        tg.cancel_scope.cancel()


def demo_files(root: Path) -> list[str]:
    """The docs the demo counts: README.md and docs/*.md under `root`."""
    return [str(p) for p in [root / "README.md", *sorted((root / "docs").glob("*.md"))] if p.is_file()]


async def run_demo(daemon: Any) -> None:
    from blackboard.display import final_item, follow_goal, render_tree
    from blackboard.views import ReadView

    if "planner" not in daemon.slots:
        err.print("error: --demo needs the stock agents (agents/wordcount.py); run it from a checkout")
        daemon.stop()
        return
    files = demo_files(Path.cwd())
    goal = await daemon.board.post("wordcount.goal", {"files": files, "top": 10}, actor="demo")
    console.print(f"posted goal {goal.id}: count the words of {len(files)} files")
    tree = await follow_goal(ReadView(daemon.board, "demo"), goal.id, console, timeout=120)
    console.print(render_tree(tree))
    table = Table("word", "count", title="most frequent words", min_width=30)
    for word, n in final_item(tree).result["top"]:
        table.add_row(word, str(n))
    console.print(table)
    if daemon.http_url and not daemon.until_idle:
        console.print(f"still serving on {daemon.http_url}; try: curl -s {daemon.http_url}/v1/stats")


def json_flag(flag: str, text: str | None) -> Any:
    """A flag's JSON value (None when not given), or exit 2 naming the flag."""
    import json

    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as e:
        err.print(f"error: {flag}: expected JSON: {e}")
        raise typer.Exit(2) from None


def load_goal(path: Path) -> tuple[str, Any]:
    """(kind, payload) of a goal template file, or exit 2 naming what is wrong."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        err.print(f"error: --goal: cannot read {path}: {e}")
        raise typer.Exit(2) from None
    if not isinstance(data, dict) or not isinstance(data.get("kind"), str):
        err.print(f"error: --goal: {path} must be a mapping with 'kind' (a string) and 'payload'")
        raise typer.Exit(2)
    return data["kind"], data.get("payload")


async def run_goal(daemon: Any, kind: str, payload: Any) -> None:
    """Post one goal, follow its tree live, then print the tree, its result and its model usage."""
    from blackboard.display import final_item, follow_goal, render_tree, usage_line
    from blackboard.views import ReadView

    goal = await daemon.board.post(kind, payload, actor=CLI)
    console.print(f"posted goal {goal.id} ({kind})")
    tree = await follow_goal(ReadView(daemon.board, CLI), goal.id, console, timeout=600)
    console.print(render_tree(tree))
    final = final_item(tree)
    console.print_json(data=final.result if final.status.value == "done" else {"error": final.error})
    console.print(usage_line(await daemon.board.usage(goal.id)))


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Folder for the new project (created if missing).")],
) -> None:
    """Scaffold a project: blackboard.toml, agents/ with an example agent, policies/."""
    from blackboard.scaffold import scaffold

    try:
        written = scaffold(directory)
    except FileExistsError as e:
        err.print(f"error: {e} already exists; nothing was written")
        raise typer.Exit(1) from None
    for path in written:
        console.print(f"wrote {path}")
    console.print(f"next: cd {directory} && blackboard run")


# -- working with a board ---------------------------------------------------------------------
