"""How fast vgglab runs here: the speed probe (:mod:`.probe`), what its rates decide (:mod:`.choice`), and
the settings resolved for a run or a model (:mod:`.resolve`). The machine's facts are :mod:`vgglab.machine`."""

from .choice import SpeedChoice
from .probe import ProbeCache, Rates, rates_of, time_arms, time_forward
from .resolve import resolve_inference_precision, resolve_speed

__all__ = [
    "SpeedChoice",
    "ProbeCache",
    "Rates",
    "rates_of",
    "time_arms",
    "time_forward",
    "resolve_speed",
    "resolve_inference_precision",
]
