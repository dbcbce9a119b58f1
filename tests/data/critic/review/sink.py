from blackboard import agent


@agent(name="cc-sink", consumes=["cc.judged"])
async def sink(item, ctx):  # type: ignore[no-untyped-def]
    return "used"
