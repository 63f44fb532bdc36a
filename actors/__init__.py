"""Ray actors: thin shells around the pure core (router, shard, arbitration, supervisor)."""
