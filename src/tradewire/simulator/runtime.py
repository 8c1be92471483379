"""What the app's routes share: the engine, the socket hub and the rate limiter."""

from __future__ import annotations

from dataclasses import dataclass, field

from tradewire.simulator.engine import Engine
from tradewire.simulator.hub import Hub
from tradewire.simulator.limits import Limits


@dataclass
class Runtime:
    engine: Engine
    hub: Hub = field(default_factory=Hub)
    limits: Limits = field(default_factory=Limits)

    def now(self) -> int:
        return self.engine.clock.now_ms()

    def publish(self) -> None:
        """Send the engine's pending events to the subscribed sockets, in engine order."""
        self.hub.dispatch(self.engine.drain_events())

    def tick(self) -> None:
        """Expire due listenKeys (and tell their sockets)."""
        self.engine.tick()
        self.publish()
