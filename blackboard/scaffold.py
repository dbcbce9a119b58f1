"""`blackboard init`: a new project folder, shaped like this repo (config, agents/, policies/)."""

from __future__ import annotations

from pathlib import Path

CONFIG = """\
# blackboard daemon settings. Flags and BLACKBOARD_* environment variables override these.
url = "memory://"          # redis://127.0.0.1:6379 for a shared, durable board
board = "default"
agents = ["agents"]
policies = ["policies"]    # strict: each agent may do only what its role grants
grace = 30.0               # seconds in-flight work gets to finish on SIGTERM
host = "127.0.0.1"
port = 8420
"""

EXAMPLE_AGENT = '''\
"""An example agent: greets whoever a `hello.request` names, and posts a follow-up item.

Try it: blackboard run, then in another terminal
    curl -s -XPOST localhost:8420/v1/items -d '{"kind": "hello.request", "payload": {"name": "Ada"}}'
"""

from blackboard import Context, Item, agent


@agent(name="greeter", consumes=["hello.request"], produces=["hello.note"], concurrency=4)
async def greet(item: Item, ctx: Context) -> dict[str, str]:
    """Answer a hello.request."""
    name = item.payload.get("name", "world")
    await ctx.post("hello.note", {"text": f"greeted {name}"})
    ctx.log.info("greeted", name=name)
    return {"greeting": f"Hello, {name}!"}


@agent(name="notetaker", consumes=["hello.note"])
async def note(item: Item, ctx: Context) -> str:
    """Acknowledge a note."""
    return "noted: " + item.payload["text"]
'''

POLICIES_README = """\
# policies

Policy files for this project's board (YAML). With none, the board runs open; with any, it runs
strict: an action needs a role that grants it. `blackboard policy check policies` lints them,
`blackboard policy explain --agent greeter --kind hello.note` says what decides.
"""

EXAMPLE_POLICY = """\
# A strict policy for the example agents: each may do only what its role grants.
roles:
  greeter: {claim: [hello.request], post: [hello.note]}
  notetaker: {claim: [hello.note]}
  operator: {post: [hello.request], read: ["*"], cancel: ["*"], approve: ["*"]}
principals:
  greeter: [greeter]        # agents are principals by their name
  notetaker: [notetaker]
  cli: [operator]           # the command line
  http: [operator]          # the HTTP API
"""


def scaffold(directory: Path) -> list[Path]:
    """Write the project files; refuses (FileExistsError) to overwrite any of them."""
    files = {
        directory / "blackboard.toml": CONFIG,
        directory / "agents" / "hello.py": EXAMPLE_AGENT,
        directory / "policies" / "README.md": POLICIES_README,
        directory / "policies" / "example.yaml": EXAMPLE_POLICY,
    }
    for path in files:
        if path.exists():
            raise FileExistsError(str(path))
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return list(files)
