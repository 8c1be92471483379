"""More of the exchange's error answers: position mode, margin type, trailing stops, batches.

Entries are ``(code, msg)`` like those in ``errors``, and are raised with ``errors.reject``.
Codes and messages follow Binance's USD-M error-code page; where the page does not say which
code a rule answers (marked *inferred*), the nearest documented one is used.
"""

from __future__ import annotations

NO_NEED_TO_CHANGE_POSITION_SIDE = (-4059, "No need to change position side.")
INVALID_POSITION_SIDE = (-4060, "Invalid position side.")
POSITION_SIDE_NOT_MATCH = (-4061, "Order's position side does not match user's setting.")
POSITION_SIDE_OPEN_ORDERS = (-4067,
                             "Position side cannot be changed if there exists open orders.")
POSITION_SIDE_POSITION = (-4068, "Position side cannot be changed if there exists position.")
NO_NEED_TO_CHANGE_MARGIN_TYPE = (-4046, "No need to change margin type.")
MARGIN_TYPE_OPEN_ORDERS = (-4047, "Margin type cannot be changed if there exists open orders.")
MARGIN_TYPE_POSITION = (-4048, "Margin type cannot be changed if there exists position.")
BATCH_SIZE = (-4082, "Invalid number of batch place orders.")
# inferred: a hedge-mode closePosition on the position's own side could only grow it
CLOSE_POSITION_SIDE = (-2022, "ReduceOnly Order is rejected.")
