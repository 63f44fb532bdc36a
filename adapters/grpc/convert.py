"""Protobuf messages <-> the engine's wire lists and models (one place for the mapping)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError

from ...engine import codec
from ...engine.arbitration import Verdict
from ...engine.errors import RequestRejected
from ...engine.runs import EmergencyRun, new_run_id
from . import shush_pb2 as pb

_ACK = {codec.ACCEPTED: pb.ACCEPTED, codec.DUPLICATE: pb.DUPLICATE,
        codec.REJECTED: pb.REJECTED, codec.RETRY: pb.RETRY}


def require_attribute_value(name: str, value: Any) -> None:
    """An attribute value the engine takes (either request form), or ``TypeError``."""
    if not isinstance(value, bool | int | float | str):
        raise TypeError(f"attribute {name!r}: values are numbers, strings or booleans, not "
                        f"{type(value).__name__}")


def attribute_to_proto(name: str, value: Any) -> pb.AttributeValue:
    require_attribute_value(name, value)
    if isinstance(value, bool):
        return pb.AttributeValue(flag=value)
    if isinstance(value, int):
        return pb.AttributeValue(integer=value)
    if isinstance(value, float):
        return pb.AttributeValue(number=value)
    return pb.AttributeValue(text=value)


def attribute_from_proto(value: pb.AttributeValue) -> Any:
    kind = value.WhichOneof("kind")
    return None if kind is None else getattr(value, kind)


def event_to_proto(event: Mapping[str, Any]) -> pb.Event:
    return pb.Event(
        event_id=event["event_id"], customer_id=event["customer_id"], type=event["type"],
        occurred_at_ms=event["occurred_at_ms"], source=event.get("source", ""),
        attributes={k: attribute_to_proto(k, v) for k, v in event.get("attributes", {}).items()})


def wire_event_id(event: Any) -> str:
    """The event id of an item of a packed batch, whatever the item is ("" if none)."""
    if isinstance(event, list) and event and isinstance(event[0], str):
        return event[0]
    return ""


def event_to_wire(event: pb.Event) -> list[Any]:
    """A protobuf event as the engine's wire list; a missing time stays invalid (None)."""
    return [event.event_id, event.customer_id, event.type,
            event.occurred_at_ms if event.occurred_at_ms > 0 else None, event.source,
            {k: attribute_from_proto(v) for k, v in event.attributes.items()}]


def acks_to_reply(event_ids: Iterable[str], acks: Iterable[list[Any]]) -> pb.SubmitReply:
    reply = pb.SubmitReply()
    counts = [0, 0, 0, 0]
    for event_id, ack in zip(event_ids, acks, strict=True):
        status = ack[0]
        counts[status] += 1
        if status == codec.ACCEPTED:
            continue  # only exceptions are spelled out; accepted is the default
        reply.acks.append(pb.EventAck(event_id=event_id, status=_ACK[status],
                                      reason=ack[1], field=ack[2] if len(ack) > 2 else ""))
    reply.accepted, reply.duplicates, reply.rejected, reply.retry = counts
    return reply


def run_from_request(request: pb.StartRunRequest, default_rate_per_s: float) -> EmergencyRun:
    """An operator's run request, validated; errors name the field."""
    p = request.population
    data: dict[str, Any] = {
        "run_id": request.run_id or new_run_id("emergency"),
        "population": {"zips": list(p.zips), "regions": list(p.regions),
                       "segments": list(p.segments), "countries": list(p.countries),
                       "products_any": list(p.products_any), "where": p.where or None,
                       "everyone": p.everyone},
        "moment": request.moment, "urgency": request.urgency or 1.0,
        "half_life_s": request.half_life_s or 21_600.0,
        "rate_per_s": request.rate_per_s or default_rate_per_s,
        "bypass_soft_caps": request.bypass_soft_caps, "dedup_key": request.dedup_key or None,
        "purpose": request.purpose, "requested_by": "grpc"}
    try:
        return EmergencyRun.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise RequestRejected(first["msg"], field=".".join(str(x) for x in first["loc"])) from exc


def progress_to_proto(progress: Mapping[str, Any]) -> pb.RunProgress:
    return pb.RunProgress(
        run_id=progress["run_id"], state=str(progress["state"]),
        **{k: int(progress[k]) for k in ("selected", "injected", "treated", "skipped", "errors")},
        started_ms=progress.get("started_ms") or 0, finished_ms=progress.get("finished_ms") or 0)


def verdict_to_reply(verdict: Verdict, removed: list[list[str]],
                     treatment_id: str = "") -> pb.DecideReply:
    return pb.DecideReply(
        customer_id=verdict.customer_id, winner=verdict.winner or "",
        treatment_id=treatment_id,
        ranked=[pb.RankedAction(action_id=c.action_id, moment_id=c.moment_id or "", p=c.p,
                                c=c.c, v=c.v, l=c.l, score=c.score) for c in verdict.candidates],
        removed=[pb.RemovedAction(action_id=a, policy=p, reason=r) for a, p, r in removed])


def acks_to_outcome_reply(acks: Iterable[list[Any]],
                          outcomes: Iterable[pb.Outcome]) -> pb.OutcomeReply:
    reply = pb.OutcomeReply()
    counts = [0, 0, 0, 0]
    for index, (outcome, ack) in enumerate(zip(outcomes, acks, strict=True)):
        status = ack[0]
        counts[status] += 1
        if status == codec.ACCEPTED:
            continue
        reply.acks.append(pb.OutcomeAck(index=index, treatment_id=outcome.treatment_id,
                                        status=_ACK[status], reason=ack[1] if len(ack) > 1 else "",
                                        field=ack[2] if len(ack) > 2 else ""))
    reply.accepted, reply.duplicates, reply.rejected, reply.retry = counts
    return reply


def outcome_to_proto(outcome: Mapping[str, Any]) -> pb.Outcome:
    return pb.Outcome(treatment_id=outcome["treatment_id"], customer_id=outcome["customer_id"],
                      outcome=outcome["outcome"], at_ms=int(outcome["at_ms"]))
