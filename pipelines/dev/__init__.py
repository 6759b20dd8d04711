"""For development and demonstration only, never on a production night: the synthetic drop
generator (``recycle gen``), loopback gateway simulators (``--simulate-gateways``) and
``make demo``.
"""
