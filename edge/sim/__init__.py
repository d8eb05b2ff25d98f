"""Site simulator: people walking in zones, their bands' adverts, and the radio between them."""

from edge.sim.radio import RadioParams
from edge.sim.radio_alt import AltRadioParams
from edge.sim.scenarios import BandScript, Scenario
from edge.sim.simulator import Simulator

__all__ = ["AltRadioParams", "BandScript", "RadioParams", "Scenario", "Simulator"]
