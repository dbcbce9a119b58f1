"""Tools over the pack's incident data (a stand-in for the shop's systems)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DATA = Path(__file__).with_name("_incidents.json")


def _data() -> dict[str, Any]:
    return dict(json.loads(DATA.read_text()))


def address_lookup(street: str) -> dict[str, Any]:
    """Whether an address is a known forwarder or drop address."""
    known = _data()["addresses"]
    return next(
        (a for a in known if a["street"].lower() in street.lower()), {"street": street, "known": False}
    )


def customer_history(customer_id: str) -> dict[str, Any]:
    """Orders, returns and disputes of a customer."""
    return dict(_data()["customers"].get(customer_id, {"orders": 0, "returns": 0, "disputes": 0}))


def tracking_incidents(tracking_number: str) -> list[dict[str, Any]]:
    """Incidents recorded by carriers for a parcel."""
    return [i for i in _data()["tracking"] if i["tracking"] == tracking_number]


def payment_incidents(customer_id: str) -> list[dict[str, Any]]:
    """Chargebacks and failed payments of a customer."""
    return [i for i in _data()["payments"] if i["customer"] == customer_id]
