from blackboard import Item


def valid(output: Item, producer: Item | None) -> str | None:
    return None if output.payload.get("value") is not None else "value is missing"
