"""ArbitrationActor: holds the action catalog, the levers, the propensity model and the volume
budgets, and scores batches of candidate sets by P×C×V×L in one vectorized pass.

P is learned online from outcomes (``learn``), per action and context-feature bin, and drawn by
Thompson sampling when ``arbitration.explore`` is on. A winner reserves its action's budget;
the shard commits the reservation when the treatment is written to the ledger (it will fire)
or releases it (held out, refused at send time). The model and budgets are saved to the store.
Shards keep a replica of the scorer (levers and learned counts, ``replica``) to answer inbound
Decides and small decision turns without this hop, unless a candidate has a budget.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import msgpack
import ray

from ..engine import codec
from ..engine.catalog import Catalog
from ..engine.config import EngineConfig
from ..engine.errors import CatalogError
from ..policies.budgets import BudgetBook, apply_budgets
from ..policies.policy_config import catalog_policies
from . import gil, ray_calls
from .lanes import ARBITRATOR_LANE_METHODS, LaneHost
from .ports import StoreFactory
from .scoring import scorer_for

MODEL_NAME = "propensity"
BUDGETS_NAME = "budgets"


class ArbitrationActorBody:
    def __init__(self, index: int, config_json: str, catalog_wire: dict[str, Any],
                 store_factory: StoreFactory) -> None:
        config = EngineConfig.model_validate_json(config_json)
        gil.hand_over_every(config.gil_switch_interval_ms)
        catalog = Catalog.from_wire(catalog_wire)
        policy = catalog_policies(catalog)
        self.index = index
        self.save_interval_s = config.arbitration.save_interval_s
        self.scorer = scorer_for(catalog, policy, config.arbitration)
        self.budgets = BudgetBook(policy.budget_limits(), policy.budget_timezone)
        self.store = store_factory()
        self._model_key = f"{MODEL_NAME}-{index}"
        self._budget_key = f"{BUDGETS_NAME}-{index}"
        saved = self.store.load_model(self._model_key)
        if saved is not None:
            self.scorer.propensity.load_snapshot(msgpack.unpackb(saved, strict_map_key=False))
        saved = self.store.load_model(self._budget_key)
        if saved is not None:
            self.budgets.load_snapshot(msgpack.unpackb(saved, strict_map_key=False))
        self.incarnation = uuid.uuid4().hex[:12]  # a restart starts its versions afresh
        self._last_save = time.monotonic()
        self.scored = 0
        self.learned = 0
        self.lane_host = LaneHost(self, ARBITRATOR_LANE_METHODS,
                                  what=ray_calls.actor_name("arbitration", index))

    async def lane(self) -> list[str]:
        """Where this arbitrator serves its lane (``actors.lanes``): ``[node id, socket
        path]``. Shards on the same node send their scoring and reports there."""
        return await self.lane_host.where()

    async def arbitrate(self, batch: bytes) -> bytes:
        """Score candidate sets. The envelope may carry the shard's reports since its last
        call (``learned`` outcomes, ``settled`` budget reservations): they are taken first,
        one call instead of three per decision round."""
        sets, meta = codec.decode_candidate_batch(batch)
        self._settle(meta.get("settled") or [])
        self._learn(meta.get("learned") or [])
        verdicts = self.scorer.score(sets)
        verdicts, removed = apply_budgets(verdicts, self.budgets, int(time.time() * 1000))
        self.scored += len(sets)
        return codec.encode_verdicts(verdicts, removed={
            c: [[r.action_id, r.policy, r.reason] for r in rs] for c, rs in removed.items()})

    def _stamp(self) -> str:
        return f"{self.incarnation}/{self.scorer.version}"

    async def replica(self, stamp: str) -> bytes | None:
        """The scorer's levers and learned counts for a shard's replica, unless the shard's
        ``stamp`` is already current (``None``)."""
        if stamp == self._stamp():
            return None
        packed: bytes = msgpack.packb({"stamp": self._stamp(),
                                       "scorer": self.scorer.to_replica()})
        return packed

    async def learn(self, batch: bytes) -> int:
        """Outcomes ``[action_id, feature_row_code, positive]`` from the shards."""
        return self._learn(codec.unpack(batch, codec.OUTCOMES))

    def _learn(self, items: list[list[Any]]) -> int:
        if not items:
            return 0
        learned = self.scorer.learn(items)
        self.learned += learned
        self._save_if_due()
        return learned

    async def settle_budgets(self, settled: list[list[Any]]) -> None:
        """``[idempotency_key, committed]``: the reservation fired, or was given back."""
        self._settle(settled)

    def _settle(self, settled: list[list[Any]]) -> None:
        if not settled:
            return
        now_ms = int(time.time() * 1000)
        for key, committed in settled:
            if committed:
                self.budgets.commit(key, now_ms)
            else:
                self.budgets.release(key)
        self._save_if_due()

    def _save_if_due(self, force: bool = False) -> None:
        if force or time.monotonic() - self._last_save >= self.save_interval_s:
            self.store.save_model(self._model_key,
                                  msgpack.packb(self.scorer.propensity.to_snapshot()))
            self.store.save_model(self._budget_key, msgpack.packb(self.budgets.to_snapshot()))
            self._last_save = time.monotonic()

    async def flush(self) -> None:
        self._save_if_due(force=True)

    async def propensities(self) -> dict[str, float]:
        scorer = self.scorer
        return dict(zip(scorer.table.ids, scorer.propensity.mean().tolist(), strict=True))

    async def set_lever(self, action_id: str, lever: float) -> None:
        if action_id not in self.scorer.table.index:
            raise CatalogError(f"unknown action {action_id!r}", field="action_id")
        if not lever >= 0:
            raise CatalogError(f"a lever must be >= 0, got {lever}", field="lever")
        self.scorer.set_lever(action_id, lever)

    async def levers(self) -> dict[str, float]:
        return self.scorer.table.levers()

    async def serving(self) -> None:
        """Nothing: an arbitrator serves no clients (the supervisor's check, as for the
        others)."""
        return None

    async def health(self) -> dict[str, Any]:
        return {"index": self.index, "scored": self.scored, "learned": self.learned,
                "lane_calls": self.lane_host.served()}


ArbitrationActor = ray.remote(ArbitrationActorBody)
