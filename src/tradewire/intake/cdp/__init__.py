"""The Discord CDP monitor (opt-in; see docs/cdp-monitor.md for the account risk).

A browser logged in to Discord runs with ``--remote-debugging-port``; the monitor attaches to
the channel's tab over the DevTools protocol (``protocol.py``, raw ``websockets``), injects a
read-only MutationObserver (``observer.js``), turns its reports into ``RawMessage``s
(``tracker.py``, no I/O) and posts them to the intake API (``monitor.py``); ``cli.py`` is the
command-line glue. Importing this package opens nothing.
"""

from tradewire.intake.cdp.cli import add_arguments, run_from_args
from tradewire.intake.cdp.monitor import (
    DEFAULT_DEBUG_URL,
    CdpMonitor,
    intake_post,
    run_cdp_monitor,
)
from tradewire.intake.cdp.tracker import ChannelMatch, MessageTracker, snowflake_ms

__all__ = [
    "DEFAULT_DEBUG_URL",
    "CdpMonitor",
    "ChannelMatch",
    "MessageTracker",
    "add_arguments",
    "intake_post",
    "run_cdp_monitor",
    "run_from_args",
    "snowflake_ms",
]
