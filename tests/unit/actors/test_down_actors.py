"""The supervisor's rule for re-creating actors: never an actor Ray is still restarting."""

from __future__ import annotations

from shush.actors.supervisor import RECREATE_AFTER_CHECKS, DownActors

SHARD = ("shard", 0)


def test_an_actor_ray_is_restarting_is_left_to_recover() -> None:
    down = DownActors(recreate_after_s=120.0)
    # a restart replaying a long journal: unavailable on check after check, for a minute
    assert not any(down.check(SHARD, "restarting", float(t)) for t in range(60))
    assert not down.check(SHARD, "alive", 60.0)
    assert not down.check(SHARD, "restarting", 200.0)  # a new episode starts the clock again


def test_an_actor_unreachable_too_long_is_re_created_once() -> None:
    down = DownActors(recreate_after_s=120.0)
    assert not down.check(SHARD, "restarting", 0.0)
    assert not down.check(SHARD, "restarting", 119.0)
    assert down.check(SHARD, "restarting", 120.0)
    assert not down.check(SHARD, "restarting", 121.0)  # the re-created one gets its own time


def test_an_actor_ray_will_not_restart_is_re_created_after_a_few_checks() -> None:
    down = DownActors(recreate_after_s=120.0)
    verdicts = [down.check(SHARD, "dead", float(t)) for t in range(RECREATE_AFTER_CHECKS)]
    assert verdicts == [False] * (RECREATE_AFTER_CHECKS - 1) + [True]
    assert not down.check(("shard", 1), "dead", 0.0)  # each actor counts on its own


def test_an_answer_in_between_resets_the_count_of_dead_checks() -> None:
    down = DownActors(recreate_after_s=120.0)
    for t in range(RECREATE_AFTER_CHECKS - 1):
        assert not down.check(SHARD, "dead", float(t))
    assert not down.check(SHARD, "restarting", 5.0)  # Ray took it back: not dead in a row
    assert not down.check(SHARD, "dead", 6.0)
