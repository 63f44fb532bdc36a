"""P×C×V×L arbitration as pure functions: one candidate's explanation, and a vectorized batch.

score = P (propensity) × C (context, decayed moment relevance) × V (value) × L (lever).
Ties break deterministically: higher score first, then the action id in alphabetical order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .models import Action, Candidate
from .records import record


@record
class CandidateSet:
    """The applicable actions of one customer, with their context factor and moment."""

    customer_id: str
    action_ids: tuple[str, ...]
    contexts: tuple[float, ...]
    moment_ids: tuple[str | None, ...]
    features: tuple[int, ...] = ()  # the customer's context-feature bins (propensity)


@record
class Verdict:
    customer_id: str
    candidates: tuple[Candidate, ...]  # ranked, best first
    winner: str | None
    also: tuple[str, ...] = ()  # winners of per-channel competitions (``compete_per_channel``)


def score(action_id: str, moment_id: str | None, p: float, c: float, v: float,
          lever: float) -> Candidate:
    """One candidate's score with every factor kept, for the explanation."""
    return Candidate(action_id=action_id, moment_id=moment_id, p=p, c=c, v=v, l=lever,
                     score=p * c * v * lever)


def explain(candidate: Candidate) -> str:
    """``P 0.50 × C 0.80 × V 120 × L 1.00 = 48.00``"""
    return (f"P {candidate.p:.2f} × C {candidate.c:.2f} × V {candidate.v:g} × "
            f"L {candidate.l:.2f} = {candidate.score:.2f}")


class ActionTable:
    """The catalog's actions as numpy columns, indexed by a stable order of action ids."""

    def __init__(self, actions: Mapping[str, Action]) -> None:
        self.ids = sorted(actions)
        self.index = {action_id: i for i, action_id in enumerate(self.ids)}
        self.value = np.array([actions[a].value for a in self.ids], dtype=np.float64)
        self.default_lever = np.array([actions[a].lever for a in self.ids], dtype=np.float64)
        self.lever = self.default_lever.copy()
        channels = sorted({actions[a].channel for a in self.ids})
        # 0: the customer's main competition; 1 + channel index: that channel's own.
        self.group = {a: 1 + channels.index(actions[a].channel)
                      if actions[a].compete_per_channel else 0 for a in self.ids}

    def set_lever(self, action_id: str, lever: float) -> None:
        self.lever[self.index[action_id]] = lever

    def levers(self) -> dict[str, float]:
        return {a: float(self.lever[i]) for i, a in enumerate(self.ids)}


def candidate_index(sets: Sequence[CandidateSet], table: ActionTable
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(action index, set index) of every candidate of every set, flattened."""
    sizes = np.fromiter((len(s.action_ids) for s in sets), dtype=np.int64, count=len(sets))
    total = int(sizes.sum())
    action_idx = np.fromiter((table.index[a] for s in sets for a in s.action_ids),
                             dtype=np.int64, count=total)
    return action_idx, np.repeat(np.arange(len(sets)), sizes)


def arbitrate(sets: Sequence[CandidateSet], table: ActionTable, propensity: np.ndarray,
              *, per_candidate: bool = False,
              index: tuple[np.ndarray, np.ndarray] | None = None) -> list[Verdict]:
    """Score every candidate of every set in one vectorized pass; rank within each set.

    ``propensity`` holds P per action in the table's order (a point estimate or a sample), or,
    with ``per_candidate``, P per candidate in ``candidate_index`` order (context features);
    ``index``: ``candidate_index(sets, table)``, when the caller has it.
    """
    sizes = [len(s.action_ids) for s in sets]
    total = sum(sizes)
    if total == 0:
        return [Verdict(s.customer_id, (), None) for s in sets]
    action_idx, set_idx = index if index is not None else candidate_index(sets, table)
    c = np.fromiter((x for s in sets for x in s.contexts), dtype=np.float64, count=total)
    p = propensity if per_candidate else propensity[action_idx]
    v = table.value[action_idx]
    lever = table.lever[action_idx]
    scores = p * c * v * lever
    # Sort by set, then score descending, then action id ascending (ids are sorted in the table).
    order = np.lexsort((action_idx, -scores, set_idx)).tolist()
    # Back to Python objects once, not a numpy scalar per candidate and factor
    flat_actions = [a for s in sets for a in s.action_ids]
    flat_moments = [m for s in sets for m in s.moment_ids]
    p_l, c_l, v_l, lev_l, s_l = p.tolist(), c.tolist(), v.tolist(), lever.tolist(), scores.tolist()
    verdicts: list[Verdict] = []
    start = 0
    for cset, n in zip(sets, sizes, strict=True):
        ranked = [Candidate(flat_actions[j], flat_moments[j], p_l[j], c_l[j], v_l[j], lev_l[j],
                            s_l[j])  # positional: in the order of Candidate's fields
                  for j in order[start:start + n]]
        start += n
        verdicts.append(_verdict(cset.customer_id, ranked, table))
    return verdicts


def _verdict(customer_id: str, ranked: list[Candidate], table: ActionTable) -> Verdict:
    """The best positive candidate of each competition; the main one's is ``winner``."""
    best: dict[int, str] = {}
    for cand in ranked:
        group = table.group[cand.action_id]
        if cand.score > 0 and group not in best:
            best[group] = cand.action_id
    winner = best.pop(0, None)
    also = tuple(best.values())  # in score order, as ``ranked`` is
    if winner is None and also:  # only per-channel competitions: the best of them leads
        winner, also = also[0], also[1:]
    return Verdict(customer_id, tuple(ranked), winner, also)
