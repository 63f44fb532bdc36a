"""Detectors: declarative specs (a pydantic union on ``kind``) that turn signals into moments.

Each spec is also its own runtime (see ``base``): it reads and updates a small per-customer
state (plain data, so it snapshots as msgpack) and returns moments. Kinds:

=================  ========================================================  ===========
kind               fires when                                                 driven by
=================  ========================================================  ===========
threshold          a numeric attribute crosses (or is beyond) a value         signals
status_change      a status attribute changes (optionally from/to, per key)   signals
count              at least N matching signals within a window                signals
distinct           at least N distinct attribute values within a window       signals
sequence           A then B (then C...) within a window                       signals
not_followed_by    A not followed by B within a window                        timer
absence            no matching signal for a period                            timer
trend              z-score vs own history, or EWMA slope, beyond a threshold  signals
forecast           a fitted line is expected to cross a value within horizon  signals
milestone          an age/anniversary from a profile date is reached          timer
calendar           N days before a holiday in the customer's country          timer
combination        all/any/k of other detectors' moments within a window      moments
=================  ========================================================  ===========
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from .absence import AbsenceDetector
from .base import BaseDetector, CustomerView, SignalDetector, SignalMatch
from .calendar import CalendarDetector
from .combination import CombinationDetector
from .count import CountDetector
from .distinct import DistinctCountDetector
from .forecast import ForecastDetector
from .milestone import MilestoneDetector
from .not_followed import NotFollowedByDetector
from .sequence import SequenceDetector, Step
from .status import StatusChangeDetector
from .threshold import ThresholdDetector
from .trend import TrendDetector

DetectorSpec = Annotated[
    ThresholdDetector | StatusChangeDetector | CountDetector | DistinctCountDetector
    | SequenceDetector | NotFollowedByDetector | AbsenceDetector | TrendDetector
    | ForecastDetector | MilestoneDetector | CalendarDetector | CombinationDetector,
    Field(discriminator="kind"),
]

__all__ = [
    "AbsenceDetector",
    "BaseDetector",
    "CalendarDetector",
    "CombinationDetector",
    "CountDetector",
    "CustomerView",
    "DetectorSpec",
    "DistinctCountDetector",
    "ForecastDetector",
    "MilestoneDetector",
    "NotFollowedByDetector",
    "SequenceDetector",
    "SignalDetector",
    "SignalMatch",
    "StatusChangeDetector",
    "Step",
    "ThresholdDetector",
    "TrendDetector",
]
