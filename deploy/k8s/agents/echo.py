"""An example agent for the Kubernetes deployment: answers `echo.request` with its payload.

Replace it with your own plugins: put the files in this folder and list them under the
blackboard-agents configMapGenerator in kustomization.yaml.
"""

from typing import Any

from blackboard import Context, Item, agent


@agent(name="echo", consumes=["echo.request"])
async def echo(item: Item, ctx: Context) -> Any:
    return {"echo": item.payload}
