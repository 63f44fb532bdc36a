"""Garbage at the real engine's edge: after a burst of malformed bytes and wild messages, the
engine still takes a valid event end to end. Also: API keys and RecordOutcome on a real engine.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shush.adapters.client import ShushClient
from shush.adapters.grpc import shush_pb2 as pb
from shush.adapters.grpc.auth import hash_key
from tests.factories import event_dict
from tests.integration.conftest import RunningEngine, start_engine

pytestmark = pytest.mark.integration

FUZZ = settings(max_examples=100, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
CLEAR = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT}
TYPES = ["savings_withdrawal", "balance_update", "profile_update", "nope", ""]


def _raw(running: RunningEngine, method: str, payload: bytes) -> grpc.StatusCode:
    with grpc.insecure_channel(running.engine.target) as channel:
        call = channel.unary_unary(f"/shush.v1.Shush/{method}", request_serializer=None,
                                   response_deserializer=None)
        try:
            call(payload, timeout=30)
        except grpc.RpcError as exc:
            return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


values = st.one_of(
    st.builds(pb.AttributeValue, number=st.floats()),
    st.builds(pb.AttributeValue, integer=st.integers(-2**63, 2**63 - 1)),
    st.builds(pb.AttributeValue, text=st.text(max_size=40)),
    st.builds(pb.AttributeValue, flag=st.booleans()), st.just(pb.AttributeValue()))
events = st.builds(
    pb.Event, event_id=st.text(max_size=140), customer_id=st.text(max_size=140),
    type=st.sampled_from(TYPES) | st.text(max_size=20),
    occurred_at_ms=st.integers(-2**63, 2**63 - 1) | st.just(int(time.time() * 1000)),
    source=st.text(max_size=10),
    attributes=st.dictionaries(st.sampled_from(["amount", "balance", "segment", "age", "x"])
                               | st.text(max_size=8), values, max_size=4))


@FUZZ
@given(payload=st.one_of(
    st.tuples(st.sampled_from(["SubmitEvents", "Decide", "RecordOutcome", "Explain",
                               "SetLever"]), st.binary(max_size=200)),
    st.lists(events, max_size=5).map(
        lambda es: ("SubmitEvents", pb.EventBatch(events=es).SerializeToString())),
    st.text(max_size=140).map(
        lambda c: ("Decide", pb.DecideRequest(customer_id=c).SerializeToString()))))
def test_garbage_gets_a_clear_answer(running: RunningEngine,
                                     payload: tuple[str, bytes]) -> None:
    method, data = payload
    assert _raw(running, method, data) in CLEAR


def test_after_the_garbage_a_valid_event_goes_end_to_end(running: RunningEngine) -> None:
    serving, detail = running.client.health()
    assert serving, detail
    customer = f"fz-{uuid.uuid4().hex[:8]}"
    result = running.client.submit([event_dict(customer, "savings_withdrawal",
                                               int(time.time() * 1000), amount=9000.0)])
    assert (result.accepted, result.rejected) == (1, [])
    assert running.for_customer(customer)


SUBMITTER, OPERATOR = "chaos-sub-key", "chaos-op-key"


@pytest.fixture(scope="module")
def keyed(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Any:
    running = start_engine(tmp_path_factory.mktemp("keyed"), grpc={"port": 0, "security": {
        "api_keys": [{"name": "crm", "sha256": hash_key(SUBMITTER), "role": "submitter"},
                     {"name": "ops", "sha256": hash_key(OPERATOR), "role": "operator"}]}})
    yield running
    running.client.close()
    running.engine.stop()


def test_api_keys_guard_a_real_engine(keyed: RunningEngine) -> None:
    now = int(time.time() * 1000)
    intruder = f"fz-{uuid.uuid4().hex[:8]}"
    with ShushClient(keyed.engine.target, api_key="guess", max_attempts=1) as client, \
            pytest.raises(grpc.RpcError) as refused:
        client.submit([event_dict(intruder, "savings_withdrawal", now, amount=9000.0)])
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with ShushClient(keyed.engine.target, api_key=SUBMITTER) as client:
        customer = f"fz-{uuid.uuid4().hex[:8]}"
        assert client.submit([event_dict(customer, "savings_withdrawal", now,
                                         amount=9000.0)]).accepted == 1
        with pytest.raises(grpc.RpcError) as denied:
            client.set_lever("rate_offer", 5.0)
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with ShushClient(keyed.engine.target, api_key=OPERATOR) as client:
        assert client.levers().get("rate_offer") != 5.0  # the refused call changed nothing
    assert keyed.for_customer(customer)
    assert not [t for t in keyed.treatments() if t["customer_id"] == intruder]


def test_outcomes_of_a_treatment_are_recorded(running: RunningEngine) -> None:
    customer = f"fz-{uuid.uuid4().hex[:8]}"
    running.client.submit([event_dict(customer, "savings_withdrawal", int(time.time() * 1000),
                                      amount=9000.0)])
    treatment = running.for_customer(customer)[0]
    result = running.client.record_outcomes([
        {"treatment_id": treatment["treatment_id"], "customer_id": customer,
         "outcome": "delivered"},
        {"treatment_id": treatment["treatment_id"], "customer_id": customer,
         "outcome": "accepted"}])
    assert (result.accepted + result.duplicates, result.rejected) == (2, [])


def test_an_unknown_outcome_is_refused_before_the_engine(running: RunningEngine) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        running.client.record_outcome("t1", "c1", "exploded")
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details().startswith("outcomes[0].outcome:")
