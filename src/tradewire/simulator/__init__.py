"""The built-in Binance USD-M Futures exchange simulator.

- ``Engine``: the pure, clock-driven exchange (accounts, orders, algo orders, listenKeys).
- ``create_app``: the engine behind the exchange's REST and user-data WebSocket surface.
- ``SimulatorServer`` / ``serve``: that app under uvicorn in the running event loop.
"""

from __future__ import annotations

from tradewire.simulator.app import create_app
from tradewire.simulator.engine import Delivery, Engine
from tradewire.simulator.errors import SimError
from tradewire.simulator.server import SimulatorServer, serve

__all__ = ["Delivery", "Engine", "SimError", "SimulatorServer", "create_app", "serve"]
