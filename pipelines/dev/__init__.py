"""For development and demonstration only, never on a production night: the synthetic drop
generator (``recycle gen``: :func:`generate`), loopback gateway simulators
(``--simulate-gateways``: :class:`GatewaySimulator`, :func:`write_receipts`) and ``make demo``
(``python -m pipelines.dev.demo``).
"""

from pipelines.dev.simulators import GatewaySimulator, write_receipts
from pipelines.dev.synth import generate

__all__ = ["GatewaySimulator", "generate", "write_receipts"]
