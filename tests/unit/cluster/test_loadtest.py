"""The pure parts of ``shush loadtest``: schedule, population, histograms, report. No Ray."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest

from shush.cluster import loadtest as lt
from shush.cluster.loadtest_cli import scratch_dir
from shush.cluster.loadtest_measure import is_ray_process, steps_between
from shush.cluster.loadtest_workload import SEGMENTS


def spec(**overrides: Any) -> lt.LoadSpec:
    fields: dict[str, Any] = {"target": "127.0.0.1:1", "channel_path": Path("t.jsonl"),
                              "rate_eps": 10_000.0, "duration_s": 10.0, "batch_size": 250}
    return lt.LoadSpec(**{**fields, **overrides})


# -- schedule ---------------------------------------------------------------------------------

def test_slots_are_evenly_spaced_at_the_target_rate() -> None:
    offsets = lt.slot_offsets_s(10_000, 250, 1.0)
    assert len(offsets) == 40  # 10,000 events/s in batches of 250
    assert np.allclose(np.diff(offsets), 0.025)
    assert offsets[0] == 0.0 and offsets[-1] < 1.0


def test_phase_shifts_a_process_by_a_share_of_one_interval() -> None:
    offsets = lt.slot_offsets_s(1_000, 100, 1.0, phase=0.5)
    assert offsets[0] == pytest.approx(0.05)
    assert len(offsets) == 10


def test_processes_share_the_rate_and_interleave() -> None:
    rate = lt.process_rate(10_000, 4)
    assert rate == 2_500
    merged = np.sort(np.concatenate([lt.slot_offsets_s(rate, 250, 1.0, p / 4)
                                     for p in range(4)]))
    assert len(merged) * 250 == 10_000
    assert np.allclose(np.diff(merged), 0.025)


def test_senders_split_the_slots_without_overlap() -> None:
    owned = [list(lt.sender_slots(10, s, 3)) for s in range(3)]
    assert sorted(k for slots in owned for k in slots) == list(range(10))
    assert owned[0] == [0, 3, 6, 9]


def test_bad_rate_is_refused() -> None:
    with pytest.raises(ValueError):
        lt.slot_offsets_s(0, 10, 1.0)


# -- population and events --------------------------------------------------------------------

def test_population_adds_a_fresh_customer_for_every_trigger() -> None:
    big = spec(rate_eps=50_000, duration_s=60, trigger_fraction=0.05, customers=1_000)
    assert big.trigger_customers() >= 50_000 * 60 * 0.05
    assert big.population_size() == 1_000 + big.trigger_customers()


def test_trigger_customers_get_no_background_events() -> None:
    population = lt.Population(1_000, tag="t")
    factory = lt.EventFactory(population, 0, 1, 0.05, seed=2, trigger_rows=200)
    kept = set(population.ids[:200])
    for k in range(10):
        events, triggers = factory.make_batch(k, 200, 0)
        trigger_customers = {c for c, _ in triggers}
        assert trigger_customers <= kept
        assert all(e[1] not in kept for e in events if e[1] not in trigger_customers)
        assert sum(e[1] in kept for e in events) == len(triggers)


def test_profiles_cover_every_customer_once() -> None:
    population = lt.Population(1_050, tag="t")
    batches = list(population.profile_batches(500, 1_000))
    assert [len(b) for b in batches] == [500, 500, 50]
    customers = [e[1] for b in batches for e in b]
    assert customers == population.ids
    assert batches[0][0][5]["segment"] in SEGMENTS


def test_each_trigger_is_a_fresh_customer_and_a_large_withdrawal() -> None:
    population = lt.Population(10_000, tag="t")
    factories = [lt.EventFactory(population, p, 2, 0.1, seed=3) for p in range(2)]
    seen: list[str] = []
    for factory in factories:
        for k in range(20):
            events, triggers = factory.make_batch(k, 100, 5_000)
            assert len(events) == 100
            large = [e for e in events if e[2] == "savings_withdrawal"
                     and e[5]["amount"] >= 5_000]
            assert [e[1] for e in large] == [c for c, _ in triggers]
            assert all(at == 5_000 for _, at in triggers)
            seen.extend(c for c, _ in triggers)
            assert len({e[0] for e in events}) == 100
    assert len(seen) > 300
    assert len(set(seen)) == len(seen)  # never the same customer twice, across processes


def test_background_events_never_cross_a_detector_threshold() -> None:
    factory = lt.EventFactory(lt.Population(100, tag="t"), 0, 1, 0.0, seed=1)
    events, triggers = factory.make_batch(0, 2_000, 0)
    assert not triggers
    for event in events:
        if event[2] == "balance_update":
            assert event[5]["balance"] >= 200
        else:
            assert event[5]["amount"] < 5_000


def test_an_exhausted_pool_becomes_small_withdrawals_and_is_counted() -> None:
    factory = lt.EventFactory(lt.Population(5, tag="t"), 0, 1, 1.0, seed=1)
    _, triggers = factory.make_batch(0, 8, 0)
    assert len(triggers) == 5
    assert factory.pool_exhausted == 3


# -- histograms and matching ------------------------------------------------------------------

def test_percentiles_in_ms_with_three_digits() -> None:
    hist = lt.LatencyHistogram()
    for value in range(1, 1001):  # 1..1000 ms
        hist.record_ms(float(value))
    summary = hist.summary()
    assert summary["count"] == 1000
    assert summary["p50"] == pytest.approx(500, rel=1e-3)
    assert summary["p99"] == pytest.approx(990, rel=1e-3)
    assert summary["p99_9"] == pytest.approx(999, rel=1e-3)
    assert summary["max"] == pytest.approx(1000, rel=1e-3)
    assert summary["mean"] == pytest.approx(500.5, rel=1e-3)
    live = hist.summary(mean=False)  # the live view's: no walk over every bucket
    assert live["mean"] is None and live["p99"] == summary["p99"]


def test_empty_histogram_summary_has_no_numbers() -> None:
    summary = lt.LatencyHistogram().summary()
    assert summary["count"] == 0 and summary["p99"] is None


def test_histograms_survive_encoding_and_add_up() -> None:
    a, b = lt.LatencyHistogram(), lt.LatencyHistogram()
    a.record_ms(2.0)
    b.record_ms(40.0)
    merged = lt.LatencyHistogram.decode(a.encode())
    merged.add(lt.LatencyHistogram.decode(b.encode()))
    assert merged.count == 2
    assert merged.summary()["max"] == pytest.approx(40, rel=1e-3)


def test_matcher_pairs_in_either_order_and_ignores_other_moments() -> None:
    matcher = lt.LatencyMatcher(start_wall_s=100.0)
    matcher.trigger("a", 100_000)
    matcher.treatment({"customer_id": "a", "decided_at_ms": 100_012,
                       "payload": {"moment": "large_withdrawal"}})
    matcher.treatment({"customer_id": "b", "decided_at_ms": 101_030,
                       "payload": {"moment": "large_withdrawal"}})
    matcher.treatment({"customer_id": "c", "decided_at_ms": 1, "payload": {"moment": "x"}})
    matcher.trigger("b", 101_000)
    matcher.trigger("d", 101_500)
    assert matcher.total.count == 2
    assert set(matcher.by_second) == {0, 1}
    assert matcher.total.summary()["max"] == pytest.approx(30, rel=1e-3)
    assert set(matcher.pending) == {"d"}


def test_tail_reads_only_new_complete_lines(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"old": 1}\n')
    tail = lt.TreatmentTail(path)
    assert tail.poll() == []
    with path.open("a") as handle:
        handle.write('{"n": 1}\n{"n": ')
    assert tail.poll() == [{"n": 1}]
    with path.open("a") as handle:
        handle.write('2}\n')
    assert tail.poll() == [{"n": 2}]


def test_tail_decodes_only_the_lines_it_is_asked_for(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text("")
    tail = lt.TreatmentTail(path, containing=b"large_withdrawal")
    with path.open("a") as handle:
        handle.write('{"payload": {"moment": "large_withdrawal"}}\n{"payload": {"moment": '
                     '"forecast"}}\nnot json, and not wanted\n')
    assert tail.poll() == [{"payload": {"moment": "large_withdrawal"}}]
    assert tail.lines == 3  # every treatment fired is counted, decoded or not


def test_ray_processes_are_recognised() -> None:
    assert is_ray_process("python", ["ray::ShardActor.submit"])
    assert is_ray_process("raylet", ["/x/raylet", "--flag"])
    assert is_ray_process("gcs_server", [])
    assert not is_ray_process("python", ["python", "-m", "pytest"])


# -- report and steps -------------------------------------------------------------------------

REPORT_ARGS: dict[str, Any] = dict(
    spec=spec(rate_eps=1_000), population=100, profile_s=0.5, span_s=10.0,
    counters={"sent": 10_000, "accepted": 10_000}, reasons={}, pool_exhausted=0, triggers=10,
    unmatched=0, missing_sample=[], fired=250, e2e=lt.LatencyHistogram().summary(),
    ack=lt.LatencyHistogram().summary(), lag=lt.LatencyHistogram().summary(),
    decide=lt.LatencyHistogram().summary(), decide_lag=lt.LatencyHistogram().summary(),
    decide_errors={},
    samples=[{"ray_cpu_pct": 100.0, "ray_rss_mb": 900.0, "driver_cpu_pct": 5.0,
              "machine_cpu_pct": 150.0}],
    timeline=[{"t_s": 0, "sent": 10, "accepted": 10}])


def report(rate: float, accepted: float, p99: float | None, missing: int = 0,
           span_s: float = 10.0) -> dict[str, Any]:
    e2e = {"count": 10, "p50": p99, "p95": p99, "p99": p99, "p99_9": p99, "max": p99,
           "mean": p99}
    return lt.report_dict(**{
        **REPORT_ARGS, "spec": spec(rate_eps=rate), "span_s": span_s, "e2e": e2e,
        "counters": {"sent": int(rate * 10), "accepted": int(accepted * 10)},
        "triggers": 10 + missing, "unmatched": missing})


def test_report_shape_is_plain_json() -> None:
    data = report(1_000, 1_000, 12.0)
    assert json.loads(json.dumps(data)) == data
    assert set(data) == {"version", "spec", "profiles", "throughput", "errors", "latency_ms",
                         "treatments", "resources", "timeline"}
    assert set(data["latency_ms"]) == {"submit_to_treatment", "submit_to_ack", "send_lag",
                                       "decide", "decide_send_lag"}
    assert set(data["latency_ms"]["decide"]) == {"count", "p50", "p95", "p99", "p99_9",
                                                 "max", "mean"}
    assert data["throughput"]["accepted_eps"] == 1_000


def test_rates_divide_by_the_stretched_span() -> None:
    data = report(1_000, 1_000, 12.0)
    stretched = report(1_000, 1_000, 12.0, span_s=20.0)
    assert stretched["throughput"]["accepted_eps"] == data["throughput"]["accepted_eps"] / 2
    assert data["resources"]["ray_rss_mb_max"] == 900.0


def test_a_step_passes_within_the_bound_and_the_rate() -> None:
    assert lt.step_passes(report(1_000, 1_000, 12.0), 20)
    assert not lt.step_passes(report(1_000, 1_000, 25.0), 20)
    assert not lt.step_passes(report(1_000, 800, 12.0), 20)  # did not keep up
    assert not lt.step_passes(report(1_000, 1_000, None), 20)  # no treatment seen
    assert not lt.step_passes(report(1_000, 1_000, 12.0, missing=3), 20)
    assert not lt.step_passes(report(1_000, 1_000, 12.0, span_s=15.0), 20)  # fell behind


def test_sustainable_rate_is_the_last_passing_step() -> None:
    steps = [report(1_000, 1_000, 5.0), report(2_000, 2_000, 9.0),
             report(3_000, 2_900, 40.0), report(4_000, 4_000, 5.0)]
    assert lt.sustainable_eps(steps, 20) == 2_000
    assert lt.sustainable_eps(steps[2:], 20) is None


def test_the_summary_names_the_machine_speed_it_was_given() -> None:
    from shush.cluster.loadtest_cli import summary_lines

    data = report(1_000, 1_000, 12.0)
    assert not any("machine speed" in line for line in summary_lines(data))
    [line] = [line for line in summary_lines(data, machine_loop_ms=123.4)
              if "machine speed" in line]
    assert "123.4 ms" in line


def test_the_machine_speed_is_a_finite_time_in_ms() -> None:
    from shush.cluster.machine_speed import python_loop_ms

    assert 0 < python_loop_ms(repeats=1) < float("inf")


def test_a_shards_steps_between_two_readings() -> None:
    bounds = [1, 2, 5, 10, 20, 50, 100, 200, 500]
    before = {"bounds_ms": bounds, "steps": {
        "apply": {"counts": [5] + [0] * 9, "total_ms": 2.0},
        "settle": {"counts": [3] + [0] * 9, "total_ms": 1.0}}}
    after = {"bounds_ms": bounds, "steps": {
        "apply": {"counts": [100, 0, 0, 5] + [0] * 5 + [1], "total_ms": 800.5},
        "settle": {"counts": [3] + [0] * 9, "total_ms": 1.0},
        "gc young": {"counts": [0, 0, 0, 0, 0, 2, 0, 0, 0, 0], "total_ms": 60.0}}}
    assert steps_between(before, after) == {
        "apply": {"count": 101, "total_ms": 798.5, "p50_ms": "<= 1", "p99_ms": "<= 10",
                  "longest_ms": "> 500"},
        "gc young": {"count": 2, "total_ms": 60.0, "p50_ms": "<= 50", "p99_ms": "<= 50",
                     "longest_ms": "<= 50"}}


def test_each_engine_process_has_a_role_by_its_title() -> None:
    from shush.cluster.loadtest_measure import process_role

    assert process_role(["ray::ShardActorBody.submit"]) == "shards"
    assert process_role(["ray::RouterActorBody"]) == "routers"
    assert process_role(["ray::ArbitrationActorBody.arbitrate"]) == "arbitrators"
    assert process_role(["ray::SupervisorActorBody"]) == "supervisor"
    assert process_role(["/x/raylet", "--flag"]) == "ray"
    assert process_role(["ray::IDLE"]) == "ray"


def test_cpu_per_event_divides_each_roles_seconds_by_the_events_accepted() -> None:
    data = lt.report_dict(**{**REPORT_ARGS, "cpu_seconds": {"shards": 0.8, "routers": 0.2}})
    assert data["resources"]["cpu_seconds"] == {"shards": 0.8, "routers": 0.2}
    assert data["resources"]["cpu_us_per_event"] == {"shards": 80.0, "routers": 20.0,
                                                     "all": 100.0}
    assert lt.cpu_per_event({"shards": 1.0}, 0) == {}
    from shush.cluster.loadtest_cli import summary_lines

    [line] = [line for line in summary_lines(data) if line.startswith("CPU per accepted")]
    assert line == "CPU per accepted event (µs): shards 80.0, routers 20.0; all 100.0"


def test_the_summary_counts_every_treatment_fired_against_the_events() -> None:
    from shush.cluster.loadtest_cli import summary_lines

    data = lt.report_dict(**REPORT_ARGS)  # 250 fired for 10,000 accepted events
    assert data["treatments"]["fired"] == 250
    [line] = [line for line in summary_lines(data) if line.startswith("treatments:")]
    assert line.endswith("; 250 fired in all (2.5 per 100 accepted events)")


def test_the_sampler_counts_this_process_as_the_load_generator() -> None:
    from shush.cluster.loadtest_measure import LOAD_ROLE, ResourceSampler

    sampler = ResourceSampler()
    sampler.sample()
    sum(i * i for i in range(300_000))  # some CPU of our own
    sampler.sample()
    assert sampler.cpu_seconds()[LOAD_ROLE] > 0


def test_the_sampler_counts_waits_for_a_cpu() -> None:
    """Twice as many spinning processes as cores wait for a core about as long as they run;
    the sampler adds their waits (children: the load generator's) to its role."""
    from shush.cluster.loadtest_measure import LOAD_ROLE, ResourceSampler, run_queue_wait_s

    assert run_queue_wait_s(os.getpid()) is not None
    assert run_queue_wait_s(2**22 + 12345) is None  # no such process
    spin = "import time\nend = time.monotonic() + 2.0\nwhile time.monotonic() < end: pass"
    spinners = [subprocess.Popen([sys.executable, "-c", spin])
                for _ in range(2 * (os.cpu_count() or 1))]
    sampler = ResourceSampler()
    sampler.sample()
    time.sleep(1.0)
    sampler.sample()  # while they spin: a process that ended is no longer sampled
    for spinner in spinners:
        spinner.wait()
    assert sampler.cpu_wait_seconds()[LOAD_ROLE] > 0.1


def test_the_sampler_looks_for_new_processes_every_few_samples() -> None:
    from shush.cluster.loadtest_measure import LOAD_ROLE, ResourceSampler

    sampler = ResourceSampler(rediscover_every=2)
    sampler.sample()
    spin = "import time\nend = time.monotonic() + 3.0\nwhile time.monotonic() < end: pass"
    spinner = subprocess.Popen([sys.executable, "-c", spin])
    try:
        sampler.sample()  # reads the processes it knows
        assert spinner.pid not in sampler._load
        sampler.sample()  # looks again: the spinner counts from here
        assert spinner.pid in sampler._load
        before = sampler.cpu_seconds()[LOAD_ROLE]
        time.sleep(0.5)
        sampler.sample()
        assert sampler.cpu_seconds()[LOAD_ROLE] - before > 0.1  # the spinner's CPU
    finally:
        spinner.kill()
        spinner.wait()
    sampler.sample()  # an ended process leaves the sampler
    assert spinner.pid not in sampler._load


def test_the_sampler_counts_a_store_servers_processes_as_their_own_role() -> None:
    """A local database server shares the cores: its processes (here a spinner standing in,
    which is also this process's child) count as the store server, not the load generator."""
    from shush.cluster.loadtest_measure import LOAD_ROLE, STORE_ROLE, ResourceSampler

    spin = "import time\nend = time.monotonic() + 3.0\nwhile time.monotonic() < end: pass"
    server = subprocess.Popen([sys.executable, "-c", spin])
    try:
        sampler = ResourceSampler(store_pids=[server.pid])
        sampler.sample()
        time.sleep(0.5)
        sampler.sample()
        assert server.pid not in sampler._load
        assert sampler.cpu_seconds()[STORE_ROLE] > 0.1
        assert sampler.cpu_seconds()[LOAD_ROLE] < 0.1
    finally:
        server.kill()
        server.wait()


def test_a_local_postgresql_store_is_found_by_its_postmaster() -> None:
    from shush.cluster.loadtest_measure import local_postgres_pids

    assert local_postgres_pids(None) == []
    assert local_postgres_pids("sqlite:///tmp/x.db") == []
    assert local_postgres_pids("postgresql://postgres@db.example.com:5432/test") == []
    url = os.environ.get("SHUSH_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    if "127.0.0.1" not in url and "localhost" not in url:
        pytest.skip(f"the test database {url} is not on this machine")
    [postmaster] = local_postgres_pids(f"{url}?schema=shush")
    server = psutil.Process(postmaster)
    assert server.name().startswith("postgres")
    assert any(c.name().startswith("postgres") for c in server.children())  # its backends


def test_waits_per_cpu_second_are_by_role() -> None:
    assert lt.wait_per_cpu({"shards": 0.3, "routers": 2.0, "ray": 0.1},
                           {"shards": 1.0, "routers": 1.0, "ray": 0.0}) == \
        {"shards": 0.3, "routers": 2.0}
    from shush.cluster.loadtest_cli import summary_lines

    data = lt.report_dict(**{**REPORT_ARGS, "cpu_seconds": {"shards": 2.0, "routers": 0.5},
                             "cpu_wait_seconds": {"shards": 0.5, "routers": 0.6}})
    [line] = [line for line in summary_lines(data) if line.startswith("Waiting for a CPU")]
    assert line.endswith("per second of CPU: routers 1.20, shards 0.25")


def test_the_summary_shows_each_shards_way_in_stage_by_stage() -> None:
    from shush.cluster.loadtest_cli import summary_lines

    stage = {"count": 40, "total_ms": 80.0, "p50_ms": "<= 2", "p99_ms": "<= 7",
             "longest_ms": "<= 10"}
    data = {**lt.report_dict(**REPORT_ARGS), "shard_way_in": [
        {"journal and apply": stage, "in the gateway": stage, "decide: deciding": stage},
        {"journal and apply": stage}]}
    batches, decides, other = [line for line in summary_lines(data) if "way in" in line]
    assert batches.startswith("shard 0 batches' way in")
    assert batches.index("in the gateway 40, <= 2 / <= 7 / <= 10") < batches.index(
        "journal and apply 40")
    assert decides.startswith("shard 0 Decides' way in")
    assert decides.endswith("deciding 40, <= 2 / <= 7 / <= 10") and "decide:" not in decides
    assert other.startswith("shard 1 batches' way in")


def test_the_summary_shows_each_shards_store_writes_by_stage() -> None:
    from shush.cluster.loadtest_cli import summary_lines

    def stage(total_ms: float) -> dict[str, object]:
        return {"count": 1_200, "total_ms": total_ms, "p50_ms": "<= 0.5", "p99_ms": "<= 5",
                "longest_ms": "<= 20"}

    data = {**lt.report_dict(**REPORT_ARGS), "shard_store_writes": [
        {"waiting for the write lock": stage(1520.4), "statements": stage(1600.0),
         "commit": stage(1700.0)}, {}]}
    [line] = [line for line in summary_lines(data) if " store: " in line]
    assert line.startswith("shard 0 store: 1,200 write transactions")
    assert "waiting for the write lock 1,520 ms, <= 0.5 / <= 5 / <= 20" in line
    assert line.endswith("commit 1,700 ms, <= 0.5 / <= 5 / <= 20")


def test_the_embedded_engines_data_is_removed_after_the_run_unless_kept() -> None:
    with scratch_dir(keep=False) as removed:
        (removed / "store.db-wal").write_bytes(b"x" * 1000)
    assert not removed.exists()
    with pytest.raises(RuntimeError), scratch_dir(keep=False) as failed:
        raise RuntimeError("the engine did not start")
    assert not failed.exists()
    with scratch_dir(keep=True) as kept:
        (kept / "treatments.jsonl").write_text("{}\n")
    assert (kept / "treatments.jsonl").exists()
    shutil.rmtree(kept)


def test_the_summary_shows_each_shards_snapshots_and_replay_backlog() -> None:
    from shush.cluster.loadtest_cli import summary_lines

    data = {**lt.report_dict(**REPORT_ARGS), "shard_snapshots": [
        {"snapshot_rows": 152_300, "catch_ups": 41, "replay_backlog": 100_412},
        {"snapshot_rows": 9, "catch_ups": 0, "replay_backlog": 0}]}
    first, second = [line for line in summary_lines(data) if " snapshots: " in line]
    assert first == ("shard 0 snapshots: 152,300 customers saved, 41 batches waited for a "
                     "catch-up step (past max_replay_events); a restart would replay 100,412 "
                     "events at the end")
    assert second.startswith("shard 1 snapshots: 9 customers saved, 0 batches")


def test_the_summary_shows_how_many_events_went_straight_to_the_shards() -> None:
    from shush.cluster.loadtest_cli import summary_lines

    data = lt.report_dict(**REPORT_ARGS)
    assert not any("straight" in line for line in summary_lines(data))  # through routers
    data["shard_events_direct"] = [600, 398]
    [line] = [line for line in summary_lines(data) if "straight" in line]
    assert line == (f"events straight from the clients to the shards (no router): 998 of "
                    f"{data['throughput']['accepted']:,} accepted (shard 0 600, shard 1 398)")


def test_the_summary_shows_a_rate_that_drifts_within_the_run() -> None:
    from shush.cluster.loadtest_cli import accepted_by_stretch, summary_lines

    data = report(1_000, 1_000, 12.0)
    data["spec"]["duration_s"] = 5.0
    data["timeline"] = [{"t_s": t, "sent": 1_000, "accepted": rate}
                        for t, rate in enumerate((900, 1_100, 1_000, 600, 400, 50))]
    # seconds 0-1 and 2-4; the drain after the load (second 5) is left out
    assert accepted_by_stretch(data, stretches=2) == pytest.approx([1_000, 2_000 / 3])
    assert accepted_by_stretch(data) == [900, 1_100, 1_000, 600, 400]  # one a second
    [line] = [line for line in summary_lines(data) if "stretches" in line]
    assert line.endswith("in 5 equal stretches: 900 1,100 1,000 600 400")
    data["timeline"] = []
    assert accepted_by_stretch(data) == []
    assert not any("stretches" in line for line in summary_lines(data))


def _sample(t_s: float, shards: float, load: float) -> dict[str, Any]:
    return {"ray_cpu_pct": 100.0, "ray_rss_mb": 900.0, "driver_cpu_pct": 5.0,
            "machine_cpu_pct": 150.0, "t_s": t_s,
            "cpu_s": {"shards": shards, "load generator": load}}


def test_cpu_by_window_divides_each_windows_cpu_by_its_accepted_events() -> None:
    samples = [_sample(0.0, 0.0, 0.0), _sample(5.1, 2.0, 0.5), _sample(9.9, 6.0, 1.0),
               _sample(15.0, 6.0, 1.0)]
    # 1,000 accepted a second for 10 s, then nothing (the drain)
    timeline = [{"t_s": t, "sent": 1_000, "accepted": 1_000 if t < 10 else 0}
                for t in range(15)]
    windows = lt.cpu_by_window(samples, timeline)
    assert windows == [  # sample times round to the timeline's seconds; the drain is left out
        {"from_s": 0, "to_s": 5, "accepted": 5_000,
         "cpu_s": {"shards": 2.0, "load generator": 0.5}},
        {"from_s": 5, "to_s": 10, "accepted": 5_000,
         "cpu_s": {"shards": 4.0, "load generator": 0.5}}]
    assert lt.cpu_by_window(samples[:1], timeline) == []
    assert lt.cpu_by_window([{"t_s": 0.0}, {"t_s": 5.0}], timeline) == []  # older reports


def test_the_summary_tells_a_slower_machine_from_more_engine_work() -> None:
    from shush.cluster.loadtest_cli import cpu_stretches, summary_lines

    timeline = [{"t_s": t, "sent": 1_000, "accepted": 1_000} for t in range(20)]
    # the machine slows in the second 10 s (every role's CPU per event doubles), then the
    # engine's work grows in the last 10 s (only the shards' grows)
    samples = [_sample(t, shards, load) for t, shards, load in (
        (0, 0.0, 0.0), (10, 0.2, 0.04), (20, 0.6, 0.12))]
    data = lt.report_dict(**{**REPORT_ARGS, "samples": samples, "timeline": timeline,
                             "cpu_seconds": {"shards": 0.6, "load generator": 0.12}})
    assert [s["shards_x_load"] for s in cpu_stretches(data)] == [5.0, 5.0]
    samples.append(_sample(30, 1.2, 0.16))
    timeline += [{"t_s": t, "sent": 1_000, "accepted": 1_000} for t in range(20, 30)]
    data = lt.report_dict(**{**REPORT_ARGS, "samples": samples, "timeline": timeline,
                             "cpu_seconds": {"shards": 1.2, "load generator": 0.16}})
    stretches = cpu_stretches(data)
    assert [s["shards_x_load"] for s in stretches] == [5.0, 5.0, 15.0]
    assert [s["us_per_event"]["all"] for s in stretches] == [24.0, 48.0, 64.0]
    assert [(s["from_s"], s["to_s"]) for s in cpu_stretches(data, stretches=2)] == [
        (0, 20), (20, 30)]
    [line] = [line for line in summary_lines(data) if "over the run (µs" in line]
    assert line.endswith("0-10 s 24.0 (shards 20.0, 5.00 x the load generator); 10-20 s 48.0 "
                         "(shards 40.0, 5.00 x the load generator); 20-30 s 64.0 (shards 60.0, "
                         "15.00 x the load generator)")
    data = lt.report_dict(**REPORT_ARGS)  # no windows: no line
    assert cpu_stretches(data) == []
    assert not any("over the run (µs" in line for line in summary_lines(data))


def test_the_summary_says_whether_the_profiles_were_saved_before_the_load() -> None:
    from shush.cluster.loadtest_cli import summary_lines

    data = lt.report_dict(**REPORT_ARGS)
    assert not any("before the load" in line for line in summary_lines(data))
    data["profiles"].update(saved=100, checkpoint_s=0.8)
    [line] = [line for line in summary_lines(data) if "before the load" in line]
    assert line == ("before the load: 100 profiles in 0.5 s, then a checkpoint saved 100 "
                    "customers in 0.8 s")
    data["profiles"].update(saved=None)
    [line] = [line for line in summary_lines(data) if "before the load" in line]
    assert line.endswith("no checkpoint (the engine refused it): the run's snapshots save them")
