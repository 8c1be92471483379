"""The exchange's error answers: ``SimError(http_status, code, msg)`` and a catalogue of them.

Messages follow the exchange's wording (reference §7) so a client's error mapping can be tested
against the simulator.
"""

from __future__ import annotations

from decimal import Decimal


class SimError(Exception):
    """An error the simulated exchange answers with ``{"code": code, "msg": msg}``."""

    def __init__(self, http_status: int, code: int, msg: str) -> None:
        super().__init__(f"{code}: {msg}")
        self.http_status = http_status
        self.code = code
        self.msg = msg

    def body(self) -> dict[str, int | str]:
        return {"code": self.code, "msg": self.msg}


def bad(code: int, msg: str) -> SimError:
    """A 400 answer."""
    return SimError(400, code, msg)


def missing(name: str) -> SimError:
    return bad(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


def not_required(name: str) -> SimError:
    return bad(-1106, f"Parameter '{name}' sent when not required.")


def illegal(name: str) -> SimError:
    return bad(-1100, f"Illegal characters found in parameter '{name}'.")


def invalid_enum(name: str) -> SimError:
    codes = {"side": -1117, "type": -1116, "timeInForce": -1115}
    texts = {"side": "Invalid side.", "type": "Invalid orderType.",
             "timeInForce": "Invalid timeInForce."}
    if name in codes:
        return bad(codes[name], texts[name])
    return bad(-1130, f"Data sent for parameter '{name}' is not valid.")


def min_notional(notional: Decimal) -> SimError:
    return bad(-4164, f"Order's notional must be no smaller than {notional} "
                      "(unless you choose reduce only).")


INVALID_SYMBOL = (-1121, "Invalid symbol.")
PRECISION = (-1111, "Precision is over the maximum defined for this asset.")
QTY_NOT_POSITIVE = (-4003, "Quantity less than or equal to zero.")
QTY_BELOW_MIN = (-4004, "Quantity less than min quantity.")
QTY_ABOVE_MAX = (-4005, "Quantity greater than max quantity.")
QTY_STEP = (-4023, "Quantity not increased by step size.")
PRICE_NOT_POSITIVE = (-4001, "Price less than 0.")
PRICE_BELOW_MIN = (-4013, "Price less than min price.")
PRICE_ABOVE_MAX = (-4002, "Price greater than max price.")
PRICE_TICK = (-4014, "Price not increased by tick size.")
PRICE_ABOVE_CAP = (-4016, "Price is higher than mark price multiplier cap.")
PRICE_BELOW_FLOOR = (-4024, "Price is lower than mark price multiplier floor.")
CLIENT_ID_INVALID = (-4015, "Client order id is not valid.")
CLIENT_ID_DUPLICATED = (-4116, "ClientOrderId is duplicated.")
USE_ALGO_API = (-4120, "Order type not supported for this endpoint. "
                       "Please use the Algo Order API endpoints instead.")
MARGIN_INSUFFICIENT = (-2019, "Margin is insufficient.")
WOULD_TRIGGER = (-2021, "Order would immediately trigger.")
REDUCE_ONLY_REJECTED = (-2022, "ReduceOnly Order is rejected.")
MAX_OPEN_ORDERS = (-2025, "Reach max open order limit.")
UNKNOWN_ORDER = (-2011, "Unknown order sent.")
ORDER_NOT_FOUND = (-2013, "Order does not exist.")
QTY_WITH_CLOSE_POSITION = (-4137, "Quantity must be zero with closePosition equals true.")
INVALID_LEVERAGE = (-4028, "Leverage is not valid.")
LISTEN_KEY_MISSING = (-1125, "This listenKey does not exist.")
API_KEY_FORMAT = (-2014, "API-key format invalid.")
API_KEY_INVALID = (-2015, "Invalid API-key, IP, or permissions for action.")
BAD_SIGNATURE = (-1022, "Signature for this request is not valid.")
TS_OUTSIDE_WINDOW = (-1021, "Timestamp for this request is outside of the recvWindow.")
TS_AHEAD = (-1021, "Timestamp for this request was 1000ms ahead of the server's time.")


def reject(error: tuple[int, str]) -> SimError:
    """A 400 answer from one catalogue entry."""
    return bad(*error)


def unauthorized(error: tuple[int, str]) -> SimError:
    """A 401 answer from one catalogue entry (API-key problems)."""
    return SimError(401, *error)
