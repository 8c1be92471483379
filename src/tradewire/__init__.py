"""tradewire: trade signals to Binance USD-M Futures orders for many accounts.

Layers (see docs/architecture.md): ``api`` places orders, ``streams`` keeps one user-data
stream per account and only publishes, ``bus`` carries events with retry and a dead-letter
queue, ``processor`` (the worker) records trades, cancels siblings and writes notifications,
``notify`` delivers them.
"""

__version__ = "0.1.0"
