"""One customer's state, processed one message at a time (a virtual actor's body).

The shard hosts many of these; everything here is plain data so that a customer snapshots to
msgpack and comes back identical. State is bounded: a fixed number of recent event ids, the last
attributes per signal type, each detector's small incremental state, live moments only (at most
``settings.max_moments_per_customer``; a moment that a later one of its name outranks for good
is forgotten when a decision starts, ``current_moments``). Decisions are not kept here: the
decision audit in the store has them (Explain reads it), and copying them into every snapshot
cost more than the rest of the customer.

The API the shard uses (all times are ms since the epoch)::

    moments = customer.apply(signal, catalog)  # list[Moment]; None for a duplicate event id;
                                               # raises LateEventError (an EventRejected) for
                                               # an event older than the customer's watermark
    customer.next_due_ms()                     # earliest timer of any detector, or None
    customer.due_moved                         # a timer or deferred send changed since the
                                               # shard last read next_due_ms (it clears it)
    moments = customer.on_time(now_ms, catalog)  # fire the timers due at now_ms (engine clock)
    customer.timers                            # {detector_id: due_ms}: the durable reminders
    customer.compact(now_ms, catalog)          # forget expired windows/partials (passivation)
    packed = customer.pack_snapshot()          # msgpack bytes, and back:
    customer = CustomerState.from_packed(packed)
    data = customer.to_snapshot()              # the same as plain data, and back:
    customer = CustomerState.from_snapshot(data)

Lateness: the watermark is the latest event time seen minus ``settings.allowed_lateness_s``.
An event at or after the watermark counts, even out of order; an earlier one raises
``LateEventError`` (``field == "occurred_at"``, with ``watermark_ms``) and changes nothing, so
the shard can dead-letter it with the reason.

Timers: ``apply`` first fires timers that the event's own time has passed (an event 31 days
after the last deposit proves the 30-day absence), then runs the detectors of the signal type,
then feeds new moments to the combinations that list their detector. ``on_time`` does the same
for the engine clock. Moments of ``internal`` detectors only feed combinations: they are neither
stored nor returned.
"""

from __future__ import annotations

from typing import Any

import msgpack

from .catalog import Catalog
from .contact_history import ContactHistory
from .customer_snapshot import READABLE_VERSIONS, SNAPSHOT_VERSION, moment_from, moment_to
from .detectors import BaseDetector
from .detectors.float_buffer import packable, plain
from .errors import EventRejected
from .models import Moment
from .packing import packb
from .signals import SignalRecord
from .stable_hash import digest8


class LateEventError(EventRejected):
    """An event older than its customer's watermark: dead-letter it with this reason."""

    def __init__(self, *, event_id: str, customer_id: str, occurred_at_ms: int,
                 watermark_ms: int) -> None:
        self.customer_id = customer_id
        self.occurred_at_ms = occurred_at_ms
        self.watermark_ms = watermark_ms
        super().__init__(
            f"too late: occurred at {occurred_at_ms} ms, {watermark_ms - occurred_at_ms} ms "
            f"before the customer's watermark {watermark_ms} ms (allowed lateness exceeded)",
            event_id=event_id, field="occurred_at")


DIGEST_BYTES = 8
NO_TIMER = 1 << 62  # ``CustomerState.timer_due`` without a timer: later than any time in ms


# What a customer remembers of an event id to drop its duplicates: its ``digest8`` (stable
# across processes, unlike ``hash``). Two of a customer's last ``dedup_ids`` ids share one
# with a chance of ~``dedup_ids`` in 2**64.
event_digest = digest8


class RecentIds:
    """The digests of a customer's last ``size`` event ids, in one ``bytearray`` used as a ring.

    As strings in a deque and a set, 64 ids took ~8 KB of every busy customer's memory (half of
    it) and ~2.5 us of its snapshot's packing; here they take 8 bytes each, and pack as one
    bytes value. A lookup is a substring search of at most ``size * 8`` bytes."""

    __slots__ = ("_buf", "_next", "size")

    def __init__(self, size: int, oldest_first: bytes = b"") -> None:
        if len(oldest_first) % DIGEST_BYTES:
            raise ValueError(f"recent event digests: {len(oldest_first)} bytes, not a multiple "
                             f"of {DIGEST_BYTES}")
        self.size = size
        kept = oldest_first[-size * DIGEST_BYTES:] if oldest_first else b""
        self._buf = bytearray(kept)
        self._next = 0  # the slot the next digest overwrites, once the ring is full

    def __contains__(self, digest: bytes) -> bool:
        at = self._buf.find(digest)
        while at >= 0 and at % DIGEST_BYTES:  # matched across two digests: look further on
            at = self._buf.find(digest, at + 1)
        return at >= 0

    def add_new(self, digest: bytes) -> bool:
        """Add ``digest`` unless it is held; ``False`` if it was (one call for every event,
        where ``in`` then an ``add`` made two)."""
        buf = self._buf
        at = buf.find(digest)
        while at >= 0 and at % DIGEST_BYTES:
            at = buf.find(digest, at + 1)
        if at >= 0:
            return False
        if len(buf) < self.size * DIGEST_BYTES:
            buf += digest
        else:
            start = self._next * DIGEST_BYTES
            buf[start:start + DIGEST_BYTES] = digest
            self._next = (self._next + 1) % self.size
        return True

    def oldest_first(self) -> bytes:
        start = self._next * DIGEST_BYTES
        return bytes(self._buf[start:] + self._buf[:start])

    def __len__(self) -> int:
        return len(self._buf) // DIGEST_BYTES


class CustomerState:
    __slots__ = (
        "_recent", "active_ms", "contacts", "customer_id", "deferred", "detector_state",
        "due_moved", "hot_row", "last", "last_event_ms", "moments", "partition", "placed_ms",
        "profile", "timer_due", "timers", "treated", "undecided",
    )

    def __init__(self, customer_id: str, *, dedup_ids: int = 64) -> None:
        self.customer_id = customer_id
        self.profile: dict[str, Any] = {}
        self.last: dict[str, dict[str, Any]] = {}  # signal type -> latest attributes
        self.detector_state: dict[str, dict[str, Any]] = {}
        self.timers: dict[str, int] = {}  # detector id -> due ms
        # the earliest of them (NO_TIMER: none), kept as they change: most customers hold a
        # timer (a birthday), and ``min`` over them for every event was 4 % of applying it
        self.timer_due = NO_TIMER
        self.moments: list[Moment] = []
        self.treated: dict[str, int] = {}  # idempotency key -> expiry (ms)
        self._recent = RecentIds(dedup_ids)
        self.last_event_ms: int | None = None  # latest event time seen (the watermark's base)
        self.contacts = ContactHistory()  # treatments sent and their outcomes (contact policy)
        self.deferred: dict[str, tuple[int, dict[str, Any]]] = {}  # key -> (send at, treatment)
        self.undecided = False  # new moments await a decision (survives a crash in snapshots)
        # the partition its id hashes to, kept by the shard hosting it (-1: not asked yet);
        # not in snapshots: a hash of the id, and the partition count is the engine's
        self.partition = -1
        # its row in the shard's hot columns (-1: not asked yet), kept there; not in snapshots
        self.hot_row = -1
        # a timer or a deferred send changed since the shard last took ``next_due_ms`` (it
        # clears this when it does): most turns change neither, and the shard skips those
        self.due_moved = False
        # the engine time of its last turn on the shard hosting it, and of the turn that last
        # moved it to the end of the shard's order (passivation); not in snapshots
        self.active_ms = 0
        self.placed_ms = 0

    # -- events ---------------------------------------------------------------------------
    def seen(self, event_id: str) -> bool:
        return event_digest(event_id) in self._recent

    def apply(self, signal: SignalRecord, catalog: Catalog) -> list[Moment] | None:
        """Take one signal in; return the new moments, or ``None`` for a duplicate.

        Raises ``LateEventError`` for an event older than the watermark (nothing changes).
        """
        digest = event_digest(signal.event_id)
        t = signal.occurred_at_ms
        latest = self.last_event_ms
        if latest is not None and t < (watermark := latest - catalog.allowed_lateness_ms):
            if digest in self._recent:  # a duplicate before late: a re-sent event is not lost
                return None
            raise LateEventError(event_id=signal.event_id, customer_id=self.customer_id,
                                 occurred_at_ms=t, watermark_ms=watermark)
        if not self._recent.add_new(digest):
            return None
        fired: list[Moment] = []
        if self.timer_due <= t:
            fired.extend(self._run_timers(t, catalog))
        kind = signal.type
        attributes = signal.attributes
        if kind in catalog.profile_signals:
            self.profile.update(attributes)
        if latest is None or t >= latest:  # in order (most events): the latest of its type
            self.last_event_ms = t
            latest_of_type = True
        else:  # out of order: the latest of its type only if newer than the one held
            previous = self.last.get(kind)
            latest_of_type = previous is None or previous.get("_at", 0) <= t
        if latest_of_type:  # (``dict(a, _at=t)`` costs a fifth of ``{**a, "_at": t}``)
            self.last[kind] = dict(attributes, _at=t)
        states = self.detector_state
        timed = False  # only a detector with a timer can have set one that is already due
        for detector, detector_id, version, uses_timer in catalog.detector_steps.get(kind, ()):
            state = states.get(detector_id)
            if state is None or state.get("v") != version:
                state = self._state(detector)
            moment = detector.detect(state, signal, self)
            if uses_timer:
                self._set_timer(detector, state)
                timed = True
            if moment is not None:
                fired.append(moment)
        if timed and self.timer_due <= t:  # e.g. a milestone already due
            fired.extend(self._run_timers(t, catalog))
        return self._keep(fired, catalog) if fired else fired  # most events make no moment

    # -- timers ---------------------------------------------------------------------------
    def next_due_ms(self) -> int | None:
        """When the shard next has work here: a detector timer or a deferred send."""
        if not self.deferred:  # the usual case: detector timers only, or nothing
            return self.timer_due if self.timers else None
        due = [*self.timers.values(), *(at for at, _ in self.deferred.values())]
        return min(due)

    def defer(self, key: str, at_ms: int, treatment: dict[str, Any]) -> None:
        """Keep a decided treatment to send at ``at_ms`` (quiet hours): a durable reminder."""
        self.deferred[key] = (at_ms, treatment)
        self.due_moved = True

    def due_sends(self, now_ms: int) -> list[dict[str, Any]]:
        """Take the deferred treatments due by ``now_ms``."""
        due = [key for key, (at, _) in self.deferred.items() if at <= now_ms]
        if due:
            self.due_moved = True
        return [self.deferred.pop(key)[1] for key in sorted(due)]

    def on_time(self, now_ms: int, catalog: Catalog) -> list[Moment]:
        """Fire every timer due at ``now_ms`` (engine clock); return the new moments."""
        if self.timer_due > now_ms:
            return []
        return self._keep(self._run_timers(now_ms, catalog), catalog)

    def _run_timers(self, now_ms: int, catalog: Catalog) -> list[Moment]:
        fired: list[Moment] = []
        for detector_id, due in sorted(self.timers.items(), key=lambda item: item[1]):
            if due > now_ms:
                break
            detector = catalog.runtimes.get(detector_id)
            if detector is None:  # removed from the catalog since the timer was set
                self._drop_timer(detector_id)
                continue
            state = self._state(detector)
            fired.extend(detector.on_time(state, now_ms, self))
            self._set_timer(detector, state)
        return fired

    def _set_timer(self, detector: BaseDetector, state: dict[str, Any]) -> None:
        due = detector.next_due_ms(state)
        if due is None:
            self._drop_timer(detector.id)
        elif self.timers.get(detector.id) != due:
            self.timers[detector.id] = due
            self._timers_moved()

    def _drop_timer(self, detector_id: str) -> None:
        if self.timers.pop(detector_id, None) is not None:
            self._timers_moved()

    def _timers_moved(self) -> None:
        self.timer_due = min(self.timers.values()) if self.timers else NO_TIMER
        self.due_moved = True

    # -- detectors and moments ------------------------------------------------------------
    def _state(self, detector: BaseDetector) -> dict[str, Any]:
        state = self.detector_state.get(detector.id)
        if state is None or state.get("v") != detector.version:  # a new version starts afresh
            state = {"v": detector.version}
            self.detector_state[detector.id] = state
            self._drop_timer(detector.id)
        return state

    def _keep(self, fired: list[Moment], catalog: Catalog) -> list[Moment]:
        """Feed moments to combinations (transitively); store and return the public ones."""
        if not fired:
            return fired
        queue = list(fired)
        public: list[Moment] = []
        i = 0
        while i < len(queue):
            moment = queue[i]
            i += 1
            for combination in catalog.combinations_by_member.get(moment.detector_id, ()):
                made = combination.on_moment(self._state(combination), moment)
                if made is not None:
                    queue.append(made)
            detector = catalog.runtimes.get(moment.detector_id)
            if detector is None or not detector.internal:
                public.append(moment)
        if public:
            self.moments.extend(public)
            cap = catalog.settings.max_moments_per_customer
            if len(self.moments) > cap:
                del self.moments[:-cap]
        return public

    def inject(self, moment: Moment, catalog: Catalog) -> list[Moment]:
        """A moment from outside the detectors (a sweep, an emergency run); new ones kept."""
        if any(m.moment_id == moment.moment_id for m in self.moments):
            return []
        return self._keep([moment], catalog)

    def live_moments(self, now_ms: int) -> list[Moment]:
        """Moments still within their useful life; expired ones are forgotten."""
        live = [m for m in self.moments if m.relevance(now_ms) > 0.0]
        if len(live) != len(self.moments):
            self.moments = live
            self.treated = {k: exp for k, exp in self.treated.items() if exp > now_ms}
        return live

    def current_moments(self, now_ms: int) -> list[Moment]:
        """The live moments that can still win a decision; superseded ones are forgotten.

        Candidates take, per action, the most relevant moment among those it names, the later
        one on a tie. A later moment of the same name with the same half-life, no lower urgency
        and no shorter life is at least as relevant as an earlier one at every time to come, so
        the earlier one can never be chosen again: it only cost every later decision and
        snapshot (a customer whose balance forecast fires again and again kept one per firing,
        up to ``max_moments_per_customer``), and so did its treatment keys (``treated``: the
        idempotency key ends with the moment's id; the ledger keeps every key regardless).
        Called as a decision starts, never while one of this customer's is in flight, so a
        moment that a decision chose stays for its settling.
        """
        live = self.live_moments(now_ms)
        if len(live) < 2:
            return live
        latest: dict[str, Moment] = {}  # the latest moment of each name
        kept: list[Moment] = []
        forgotten: list[str] = []
        for moment in reversed(live):
            later = latest.get(moment.name)
            if later is None:
                latest[moment.name] = moment
            elif (later.half_life_s == moment.half_life_s and later.urgency >= moment.urgency
                  and later.occurred_at_ms >= moment.occurred_at_ms
                  and later.ttl_s >= moment.ttl_s):
                forgotten.append(f"|{moment.moment_id}")
                continue
            kept.append(moment)
        if not forgotten:
            return live
        kept.reverse()
        self.moments = kept
        if self.treated:  # their treatments' keys go too: no decision can choose them again
            ends = tuple(forgotten)
            self.treated = {key: expiry for key, expiry in self.treated.items()
                            if not key.endswith(ends)}
        return kept

    def compact(self, now_ms: int, catalog: Catalog) -> None:
        """Drop state that can no longer matter at ``now_ms``: expired windows and partial
        matches, states and timers of detectors no longer in the catalog, expired moments."""
        for detector_id in list(self.detector_state):
            detector = catalog.runtimes.get(detector_id)
            if detector is None:
                del self.detector_state[detector_id]
                self._drop_timer(detector_id)
                continue
            detector.expire(self.detector_state[detector_id], now_ms)
        self.live_moments(now_ms)

    # -- treatments and policies ----------------------------------------------------------
    def mark_treated(self, idempotency_key: str, expires_ms: int) -> bool:
        """Record a treatment key; ``False`` if it was already treated."""
        if idempotency_key in self.treated:
            return False
        self.treated[idempotency_key] = expires_ms
        return True

    def namespace(self, now_ms: int, live: list[Moment] | None = None) -> dict[str, Any]:
        """What policy expressions see. ``live``: the live moments at ``now_ms`` when the
        caller has them (``current_moments`` just returned them: the same names)."""
        return {
            "customer_id": self.customer_id,
            "profile": self.profile,
            "state": self.last,
            "moments": {m.name for m in (self.live_moments(now_ms) if live is None else live)},
            "now_ms": now_ms,
        }

    # -- snapshots ------------------------------------------------------------------------
    def to_snapshot(self) -> dict[str, Any]:
        """Everything, as msgpack-ready plain data (str keys, lists, scalars, bytes)."""
        return self._snapshot({detector_id: plain(state)
                               for detector_id, state in self.detector_state.items()})

    def pack_snapshot(self) -> bytes:
        """``to_snapshot`` packed with msgpack, without copying the detectors' state to turn
        its float buffers into bytes: the packer does that as it meets them."""
        return packb(self._snapshot(self.detector_state), default=packable)

    def _snapshot(self, detector_state: dict[str, dict[str, Any]]) -> dict[str, Any]:
        return {
            "v": SNAPSHOT_VERSION,
            "customer_id": self.customer_id,
            "profile": self.profile,
            "last": self.last,
            "detector_state": detector_state,
            "timers": self.timers,
            "moments": [moment_to(m) for m in self.moments],
            "treated": self.treated,
            "recent": self._recent.oldest_first(),
            "dedup_ids": self._recent.size,
            "last_event_ms": self.last_event_ms,
            "contacts": self.contacts.to_snapshot(),
            "deferred": {k: [at, t] for k, (at, t) in self.deferred.items()},
            "undecided": self.undecided,
        }

    @classmethod
    def from_packed(cls, packed: bytes) -> CustomerState:
        """A customer from ``pack_snapshot`` output."""
        return cls.from_snapshot(msgpack.unpackb(packed, raw=False, strict_map_key=False))

    @classmethod
    def from_snapshot(cls, data: dict[str, Any]) -> CustomerState:
        """Rebuild a customer from ``to_snapshot`` output (after a msgpack round trip)."""
        if data.get("v") not in READABLE_VERSIONS:
            raise ValueError(f"customer snapshot version {data.get('v')!r}, "
                             f"expected one of {READABLE_VERSIONS}")
        state = cls(data["customer_id"], dedup_ids=data["dedup_ids"])
        state.profile = dict(data["profile"])
        state.last = {k: dict(v) for k, v in data["last"].items()}
        state.detector_state = {k: dict(v) for k, v in data["detector_state"].items()}
        state.timers = {k: int(v) for k, v in data["timers"].items()}
        state.timer_due = min(state.timers.values()) if state.timers else NO_TIMER
        state.moments = [moment_from(m, state.customer_id) for m in data["moments"]]
        state.treated = dict(data["treated"])
        if "recent" in data:
            state._recent = RecentIds(data["dedup_ids"], data["recent"])
        else:  # versions 1 and 2 kept the ids themselves
            for event_id in data["recent_ids"][-data["dedup_ids"]:]:
                state._recent.add_new(event_digest(event_id))
        state.last_event_ms = data["last_event_ms"]
        state.contacts = ContactHistory.from_snapshot(data["contacts"])
        state.deferred = {k: (int(at), dict(t)) for k, (at, t) in data["deferred"].items()}
        state.undecided = bool(data.get("undecided", False))
        state.due_moved = bool(state.timers or state.deferred)  # for the shard to schedule
        return state
