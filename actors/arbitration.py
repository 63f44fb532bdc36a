"""ArbitrationActor: holds the action catalog, the levers and the propensity model, and scores
batches of candidate sets by P×C×V×L in one vectorized pass (``engine.arbitration``)."""

from __future__ import annotations

from typing import Any

import ray

from ..engine import codec
from ..engine.arbitration import ActionTable, arbitrate
from ..engine.catalog import Catalog
from ..engine.config import EngineConfig
from ..engine.errors import CatalogError
from ..engine.propensity import PropensityModel


class ArbitrationActorBody:
    def __init__(self, index: int, config_json: str, catalog_wire: dict[str, Any]) -> None:
        config = EngineConfig.model_validate_json(config_json)
        catalog = Catalog.from_wire(catalog_wire)
        self.index = index
        self.table = ActionTable(catalog.actions)
        self.propensity = PropensityModel(self.table.ids, catalog.actions,
                                          prior_strength=config.arbitration.prior_strength)
        self.scored = 0

    async def arbitrate(self, batch: bytes) -> bytes:
        sets = codec.decode_candidate_sets(batch)
        verdicts = arbitrate(sets, self.table, self.propensity.mean())
        self.scored += len(sets)
        return codec.encode_verdicts(verdicts)

    async def set_lever(self, action_id: str, lever: float) -> None:
        if action_id not in self.table.index:
            raise CatalogError(f"unknown action {action_id!r}", field="action_id")
        if not lever >= 0:
            raise CatalogError(f"a lever must be >= 0, got {lever}", field="lever")
        self.table.set_lever(action_id, lever)

    async def set_levers(self, levers: dict[str, float]) -> None:
        for action_id, lever in levers.items():
            await self.set_lever(action_id, lever)

    async def levers(self) -> dict[str, float]:
        return self.table.levers()

    async def health(self) -> dict[str, Any]:
        return {"index": self.index, "scored": self.scored}


ArbitrationActor = ray.remote(ArbitrationActorBody)
