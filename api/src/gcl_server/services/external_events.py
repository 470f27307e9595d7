"""Events other tools send about limits (Prefect's SDK: slots acquired and released), kept in the activity history."""

from .. import activity
from ..models import ConcurrencyLimit, instances
from . import transactional

RECENT = 200  # an event id seen among a limit's newest event records is a client's resend, not a new event


@transactional
def record(events, actor):
    """Keep events ({limit_id, slots, detail} with detail["id"] the event's id) of limits that exist, each once.

    Returns how many were kept. Prefect's client re-sends the events a dropped connection left unconfirmed, so an
    id already recorded for its limit is skipped."""
    ids = sorted({event["limit_id"] for event in events})
    found = instances(
        ConcurrencyLimit.select(ConcurrencyLimit.id, ConcurrencyLimit.name).where(ConcurrencyLimit.id.in_(ids))
    )
    names = {limit.id: limit.name for limit in found}
    seen = {limit_id: _recent_event_ids(limit_id) for limit_id in names}
    kept = 0
    for event in events:
        limit_id, event_id = event["limit_id"], event["detail"]["id"]
        if limit_id not in names or event_id in seen[limit_id]:
            continue
        seen[limit_id].add(event_id)
        activity.record("event", limit_id, names[limit_id], actor=actor, slots=event["slots"], detail=event["detail"])
        kept += 1
    return kept


def _recent_event_ids(limit_id):
    return {(item["detail"] or {}).get("id") for item in activity.history(limit_id, kinds=("event",), limit=RECENT)}
