"""Context features for the propensity model: declared expressions over the customer, binned.

Each ``FeatureSpec`` gives a value through the safe expression language; numeric features are
binned by ascending ``edges`` (bin ``1 + number of edges <= value``), string features by their
``categories`` (bin ``1 + position``). Bin 0 is "missing or other": a None, a value of the wrong
type, an unknown category or an expression that fails on this customer's data.

``FeatureBinner.bins(namespace)`` gives one customer's row of bins (one per declared feature);
``propensity_features(policy, action_ids)`` gives what ``engine.propensity.PropensityModel``
needs (cardinalities, and the feature indexes each action is learned by).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping, Sequence
from typing import Any

from ..engine.errors import ExpressionError
from .expressions import Expression, compile_expression
from .policy_config import FeatureSpec, PolicyCatalog

__all__ = ["FeatureBinner", "propensity_features"]


class FeatureBinner:
    def __init__(self, specs: Sequence[FeatureSpec]) -> None:
        self.specs = tuple(specs)
        self.expressions: tuple[Expression, ...] = tuple(
            compile_expression(s.expression) for s in self.specs)
        self.cardinalities = tuple(s.cardinality for s in self.specs)

    def _bin(self, spec: FeatureSpec, value: Any) -> int:
        if spec.edges is not None:
            if isinstance(value, bool) or not isinstance(value, int | float):
                return 0
            return 1 + bisect_right(spec.edges, value)
        categories = spec.categories or ()
        return 1 + categories.index(value) if value in categories else 0

    def bins(self, namespace: Mapping[str, Any]) -> tuple[int, ...]:
        """One bin per declared feature, for one customer."""
        row = []
        for spec, expression in zip(self.specs, self.expressions, strict=True):
            try:
                value = expression.evaluate(namespace)
            except ExpressionError:
                value = None
            row.append(self._bin(spec, value))
        return tuple(row)

    def describe(self, row: Sequence[int]) -> dict[str, str]:
        """Readable bins, for explanations: ``{'age': '[30, 50)', 'segment': 'student'}``."""
        out: dict[str, str] = {}
        for spec, b in zip(self.specs, row, strict=True):
            if b == 0:
                out[spec.name] = "missing/other"
            elif spec.edges is not None:
                lo = "-inf" if b == 1 else f"{spec.edges[b - 2]:g}"
                hi = "inf" if b == len(spec.edges) + 1 else f"{spec.edges[b - 1]:g}"
                out[spec.name] = f"[{lo}, {hi})"
            else:
                out[spec.name] = (spec.categories or ())[b - 1]
        return out


def propensity_features(policy: PolicyCatalog, action_ids: Sequence[str],
                        ) -> tuple[tuple[int, ...], dict[str, list[int]]]:
    """(feature cardinalities, {action id: indexes of its context features})."""
    index = policy.feature_index()
    cardinalities = tuple(s.cardinality for s in policy.features)
    per_action = {a: [index[name] for name in policy.for_action(a).context_features]
                  for a in action_ids}
    return cardinalities, per_action
