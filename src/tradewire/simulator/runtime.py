"""What the app's routes share: the engine, the socket hub, the limits and the armed faults."""

from __future__ import annotations

from dataclasses import dataclass, field

from tradewire.simulator.conn_budget import ConnectionBudget
from tradewire.simulator.engine import Engine
from tradewire.simulator.faults import Faults
from tradewire.simulator.hub import Hub
from tradewire.simulator.limits import Limits


@dataclass
class Runtime:
    engine: Engine
    hub: Hub = field(default_factory=Hub)
    limits: Limits = field(default_factory=Limits)
    connections: ConnectionBudget = field(default_factory=ConnectionBudget)
    faults: Faults = field(init=False)

    def __post_init__(self) -> None:
        self.faults = Faults(self.engine, self.hub)

    def now(self) -> int:
        return self.engine.clock.now_ms()

    def publish(self) -> None:
        """Send the engine's pending events to the sockets subscribed at this moment, in engine
        order. Silenced events, and events of keys nobody listens to, are gone for good."""
        self.hub.dispatch(self.faults.deliverable(self.engine.drain_events()))

    def tick(self) -> None:
        """Play attached price paths up to now and expire due listenKeys (telling sockets)."""
        self.engine.advance_to(self.engine.clock.now_ms())
        self.publish()
