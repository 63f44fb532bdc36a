"""Fuzz every input path without Ray: bytes and structures that must be refused clearly.

- raw (often malformed) protobuf bytes into each gRPC method: OK or INVALID_ARGUMENT, never
  INTERNAL/UNKNOWN, and the server keeps serving;
- random msgpack bytes and structures into ``codec.unpack`` (``CodecError`` only), through the
  router's decoding path (``validate_wire_event``: ``EventRejected`` only) and into a shard core
  (one ack per event, never an exception);
- catalog YAML into ``load_catalog`` (``CatalogError`` only);
- expressions into ``compile_expression`` and ``evaluate`` (``ExpressionError`` only).
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import msgpack
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shush.actors.shard_core import ShardCore
from shush.actors.shard_persistence import ShardPersistence
from shush.adapters.channels.memory import MemoryChannel
from shush.adapters.client import ShushClient
from shush.adapters.grpc import shush_pb2 as pb
from shush.adapters.stores import MemoryStateStore
from shush.engine import codec
from shush.engine.catalog import Catalog, load_catalog
from shush.engine.clock import ManualClock
from shush.engine.config import GrpcConfig, ShardConfig
from shush.engine.errors import CatalogError, CodecError, EventRejected, ExpressionError
from shush.engine.partitions import PartitionTable
from shush.engine.signals import SignalRecord, validate_wire_event
from shush.policies.candidates import EligibilityPolicy
from shush.policies.expressions import compile_expression
from tests.factories import COMPETING_CATALOG, T0_MS, write_catalog
from tests.unit.adapters.grpc_fakes import FakeGateway, serving

FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# msgpack-able values, nested
scalars = (st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1)
           | st.floats(allow_nan=True) | st.text(max_size=20) | st.binary(max_size=20))
structures = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=6)
    | st.dictionaries(st.text(max_size=8) | st.integers(-2**63, 2**63 - 1), inner, max_size=6),
    max_leaves=30)

CATALOG = Catalog  # for the type of the fixture below


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    with tempfile.TemporaryDirectory() as directory:
        return load_catalog([write_catalog(Path(directory))])


# -- msgpack and the router's decoding path ----------------------------------------------------
@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes_decode_to_a_list_or_a_codec_error(data: bytes) -> None:
    try:
        items = codec.unpack(data, codec.EVENTS)
    except CodecError:
        return
    assert isinstance(items, list)


@FUZZ
@given(st.one_of(structures,
                 st.builds(lambda v, k, items: {"v": v, "k": k, "items": items},
                           st.sampled_from([1, 2, None]), st.sampled_from(["events", "acks"]),
                           structures)))
def test_random_structures_decode_or_fail_with_a_codec_error(value: Any) -> None:
    try:
        items = codec.unpack(msgpack.packb(value, use_bin_type=True), codec.EVENTS)
    except CodecError:
        return
    assert isinstance(items, list)


def _near_events(catalog_types: list[str]) -> st.SearchStrategy[list[Any]]:
    """Events close to valid ones: right shape, each field sometimes wrong."""
    return st.tuples(
        st.text(max_size=140) | scalars,
        st.text(min_size=1, max_size=140) | scalars,
        st.sampled_from(catalog_types) | scalars,
        st.integers(-2**63, 2**63 - 1) | scalars,
        st.text(max_size=10) | scalars,
        st.dictionaries(st.sampled_from(["amount", "balance", "segment", "age", "x"]),
                        scalars, max_size=4) | structures,
    ).map(list)


def router_decode(batch: bytes, catalog: Catalog) -> list[SignalRecord | EventRejected]:
    """What ``RouterActor.submit`` does before routing: unpack, then validate each event."""
    results: list[SignalRecord | EventRejected] = []
    for event in codec.unpack(batch, codec.EVENTS):
        try:
            validate_wire_event(event, catalog.signal_schemas)
            results.append(SignalRecord(*event))
        except EventRejected as exc:
            results.append(exc)
    return results


@FUZZ
@given(data=st.data())
def test_the_router_decoding_path_takes_or_rejects_each_event(catalog: Catalog,
                                                             data: st.DataObject) -> None:
    events = data.draw(st.lists(_near_events(sorted(catalog.signals)) | structures,
                                max_size=8))
    try:
        batch = codec.pack(codec.EVENTS, events)
    except (TypeError, ValueError, OverflowError):
        return  # not representable in msgpack: cannot arrive as bytes either
    results = router_decode(batch, catalog)
    assert len(results) == len(events)
    for result in results:
        if isinstance(result, EventRejected):
            assert result.field and result.reason


@FUZZ
@given(data=st.data())
def test_a_shard_core_answers_every_validated_event_and_keeps_going(
        catalog: Catalog, data: st.DataObject) -> None:
    events = data.draw(st.lists(_near_events(sorted(catalog.signals)), max_size=8))
    store = MemoryStateStore()
    persistence = ShardPersistence(store, 0, PartitionTable.round_robin(16, 1), 1.0)
    core = ShardCore(0, catalog, ShardConfig(), ManualClock(T0_MS), MemoryChannel(), store,
                     persistence)
    valid = []
    for event in events:
        try:
            validate_wire_event(event, catalog.signal_schemas)
        except EventRejected:
            continue
        valid.append(event)
    acks = core.apply_events(valid)
    assert len(acks) == len(valid)
    assert all(ack[0] in (codec.ACCEPTED, codec.DUPLICATE, codec.REJECTED) for ack in acks)
    sets, _ = core.candidate_sets(core.take_awaiting())  # deciding must not fail either
    assert len(sets) <= len(valid)


# -- catalogs ----------------------------------------------------------------------------------
def _load_text(text: str) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "fuzz.yaml"
        path.write_text(text)
        try:
            EligibilityPolicy(load_catalog([path]))  # as the engine loads one
        except CatalogError as exc:
            assert str(exc)


@FUZZ
@given(st.text(max_size=400))
def test_random_yaml_text_loads_or_raises_a_catalog_error(text: str) -> None:
    _load_text(text)


@FUZZ
@given(st.dictionaries(st.sampled_from(["signals", "detectors", "actions", "policies",
                                        "settings", "extra"]), structures, max_size=4))
def test_random_catalog_structures_raise_catalog_errors(data: dict[str, Any]) -> None:
    _load_text(yaml.safe_dump(data))


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, (*prefix, i))


CATALOG_PATHS = [p for p in _paths(COMPETING_CATALOG) if p]


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(CATALOG_PATHS), structures | st.text(max_size=30)),
                min_size=1, max_size=3))
def test_a_valid_catalog_with_a_few_fields_broken_still_fails_clearly(
        mutations: list[tuple[tuple[Any, ...], Any]]) -> None:
    data = copy.deepcopy(COMPETING_CATALOG)
    for path, value in mutations:
        node: Any = data
        try:
            for part in path[:-1]:
                node = node[part]
            node[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed this path
    _load_text(yaml.safe_dump(data, allow_unicode=True))


# -- expressions -------------------------------------------------------------------------------
TOKENS = ["profile", "state", "moments", "now_ms", "customer_id", "context", ".", "[", "]",
          "(", ")", "'x'", "\"a\"", "0", "1", "2.5", "-", "+", "*", "/", "%", "**", "//", "==",
          "!=", "<", ">=", " and ", " or ", "not ", " in ", " not in ", " if ", " else ",
          "days_since", "years_since", "min", "max", "abs", "len", "round", "lower",
          "coalesce", ",", "True", "None", "segment", "balance", "{", "}", ":", "lambda ",
          "__class__", "import", "x", "1e308", "10**10**10"]
NAMESPACE: dict[str, Any] = {
    "profile": {"segment": "student", "age": 30, "born": "1990-04-01"},
    "state": {"balance_update": {"balance": 50.0, "_at": T0_MS}},
    "moments": {"low_balance"}, "now_ms": T0_MS, "customer_id": "alice", "context": {},
}


def _compile_and_run(source: str) -> None:
    try:
        expression = compile_expression(source)
    except ExpressionError:
        return
    try:
        expression.evaluate(NAMESPACE)
    except ExpressionError:
        pass


@FUZZ
@given(st.text(max_size=200))
def test_random_text_compiles_or_raises_an_expression_error(source: str) -> None:
    _compile_and_run(source)


@FUZZ
@given(st.lists(st.sampled_from(TOKENS), max_size=14).map("".join))
def test_token_soup_compiles_and_evaluates_or_raises_an_expression_error(source: str) -> None:
    _compile_and_run(source)


# -- raw protobuf bytes into the gRPC methods --------------------------------------------------
METHODS = ["SubmitEvents", "SubmitPacked", "Decide", "Health", "RecordOutcome", "SetLever",
           "GetLevers", "Explain"]


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, FakeGateway]]:
    with serving(GrpcConfig(max_message_bytes=64 * 1024)) as served:
        yield served


@pytest.fixture(scope="module")
def channel(server: tuple[str, FakeGateway]) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server[0]) as opened:
        yield opened


def _raw_call(channel: grpc.Channel, method: str, payload: bytes) -> grpc.StatusCode:
    call = channel.unary_unary(f"/shush.v1.Shush/{method}", request_serializer=None,
                               response_deserializer=None)
    try:
        call(payload, timeout=10)
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


CLEAR = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT}


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


# protobuf-shaped garbage: valid tags with random wire types and lengths
fields = st.tuples(st.integers(1, 8), st.integers(0, 7), st.binary(max_size=24)).map(
    lambda f: _varint(f[0] << 3 | f[1]) + _varint(len(f[2])) + f[2])
proto_bytes = st.binary(max_size=200) | st.lists(fields, max_size=8).map(b"".join)


@FUZZ
@given(method=st.sampled_from(METHODS), payload=proto_bytes)
def test_raw_bytes_into_any_method_get_ok_or_invalid_argument(
        channel: grpc.Channel, method: str, payload: bytes) -> None:
    assert _raw_call(channel, method, payload) in CLEAR


attribute_values = st.one_of(
    st.builds(pb.AttributeValue, number=st.floats()),
    st.builds(pb.AttributeValue, integer=st.integers(-2**63, 2**63 - 1)),
    st.builds(pb.AttributeValue, text=st.text(max_size=50)),
    st.builds(pb.AttributeValue, flag=st.booleans()), st.just(pb.AttributeValue()))
proto_events = st.builds(
    pb.Event, event_id=st.text(max_size=150), customer_id=st.text(max_size=150),
    type=st.text(max_size=30), occurred_at_ms=st.integers(-2**63, 2**63 - 1),
    source=st.text(max_size=10),
    attributes=st.dictionaries(st.text(max_size=10), attribute_values, max_size=5))
proto_outcomes = st.builds(pb.Outcome, treatment_id=st.text(max_size=150),
                           customer_id=st.text(max_size=150), outcome=st.text(max_size=12),
                           at_ms=st.integers(-2**63, 2**63 - 1))


@FUZZ
@given(st.one_of(
    st.lists(proto_events, max_size=6).map(lambda es: ("SubmitEvents", pb.EventBatch(events=es))),
    st.lists(proto_outcomes, max_size=6).map(
        lambda os: ("RecordOutcome", pb.OutcomeBatch(outcomes=os))),
    st.builds(pb.DecideRequest, customer_id=st.text(max_size=150),
              channel=st.text(max_size=10)).map(lambda r: ("Decide", r)),
    st.builds(pb.SetLeverRequest, action_id=st.text(max_size=50),
              lever=st.floats()).map(lambda r: ("SetLever", r))))
def test_well_formed_but_wild_messages_get_ok_or_invalid_argument(
        channel: grpc.Channel, call: tuple[str, Any]) -> None:
    method, message = call
    assert _raw_call(channel, method, message.SerializeToString()) in CLEAR


def test_the_server_still_serves_after_the_garbage(server: tuple[str, FakeGateway]) -> None:
    with ShushClient(server[0], timeout_s=5) as client:
        result = client.submit([{"customer_id": "alice", "type": "balance_update",
                                 "attributes": {"balance": 1.0}}])
        assert result.accepted == 1
        assert client.health()[0] is True
