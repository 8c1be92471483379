"""Binance USD-M Futures REST client: one API key, typed answers, errors from ``tradewire.errors``.

Every request first waits for the rate budgets (``exchange.budget``): the IP's request-weight
budget, shared by all clients behind one egress IP (pass the same ``ip_budget``; ``ClientPool``
does), and this account's order budget. A 429/418 blocks the budget it concerns, so no client
sends into a known limit.

Order placement is safe to retry: when the outcome of a placement is unknown (timeout, 503
"Unknown error"), the client waits until the original request can no longer be executed (its
``recvWindow`` has passed on the exchange's clock), looks the order up by its client id, returns it
if it exists, and otherwise sends it once more with the same client id.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any, TypeVar

import httpx

from tradewire.clock import Clock, SystemClock
from tradewire.errors import InvalidInput, OrderRejected, UnknownOrder, UnknownOutcome
from tradewire.exchange.account_calls import AccountCalls
from tradewire.exchange.budget import BudgetConfig, RateBudget, Sleep, order_budget
from tradewire.exchange.budget import ip_budget as new_ip_budget
from tradewire.exchange.fields import Fields, fields_of_list
from tradewire.exchange.lean_http import LeanHttp
from tradewire.exchange.rest import RestSession, Security
from tradewire.exchange.rules import SymbolRules
from tradewire.exchange.signing import Params
from tradewire.exchange.wire_rest import (
    AlgoCancelResponse,
    AlgoOrderResponse,
    Balance,
    ExchangeInfo,
    LeverageResponse,
    OrderResponse,
    PositionRisk,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

DUPLICATE_CLIENT_ID = -4116
_SETTLE_MARGIN_MS = 1000  # clock uncertainty added to recvWindow before trusting a lookup


def _id_params(kind: str, numeric: int | None, client: str | None, client_key: str) -> Params:
    if numeric is None and not client:
        raise InvalidInput(f"give the {kind} id or its client id", field=client_key)
    return {f"{kind}Id": numeric, client_key: client}


class ExchangeClient(AccountCalls):
    """REST access for one account over an injected ``http`` client.

    The ``http`` client may be shared by many accounts' clients (one connection pool), so
    ``close()`` leaves it open unless ``own_http=True`` hands it over to this client.
    ``ip_budget`` is the egress IP's weight budget (default: one of its own, from ``budget``);
    the account's order budget is always its own. ``sleep`` is how waits happen (tests).
    ``lean`` (optional, shared like ``http``): the keepalive PUT goes over it instead of httpx,
    0.12-0.45 instead of 1.0-1.3 ms of event-loop CPU (``exchange.lean_http``)."""

    def __init__(
        self, base_url: str, api_key: str, api_secret: str, *, http: httpx.AsyncClient,
        clock: Clock | None = None, recv_window_ms: int = 5000, sleep: Sleep | None = None,
        own_http: bool = False, ip_budget: RateBudget | None = None,
        budget: BudgetConfig | None = None, lean: LeanHttp | None = None,
    ) -> None:
        clock = clock or SystemClock()
        config = budget or BudgetConfig()
        self._rest = RestSession(
            base_url, api_key, api_secret, http=http, clock=clock, recv_window_ms=recv_window_ms,
            ip_budget=ip_budget or new_ip_budget(config, clock, sleep),
            order_budget=order_budget(config, clock, sleep), lean=lean,
        )
        self._http = http
        self._own_http = own_http
        self._sleep = sleep or asyncio.sleep
        self._exchange_info: ExchangeInfo | None = None

    def __repr__(self) -> str:
        return f"ExchangeClient({self._rest!r})"

    async def __aenter__(self) -> ExchangeClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Forget cached data; close the HTTP client only if this client owns it."""
        self._exchange_info = None
        if self._own_http:
            await self._http.aclose()

    def signs_with(self, api_key: str, api_secret: str) -> bool:
        """This client's requests go out with these credentials (``ClientPool``'s cache check:
        the secret is compared where it already is, not kept anywhere else)."""
        return self._rest.signs_with(api_key, api_secret)

    @property
    def used_weight(self) -> int | None:
        """The last ``X-MBX-USED-WEIGHT-1M`` seen (IP weight used this minute)."""
        return self._rest.usage.used_weight_1m

    @property
    def order_counts(self) -> tuple[int | None, int | None]:
        """The last ``X-MBX-ORDER-COUNT-10S`` and ``-1M`` seen."""
        return self._rest.usage.order_count_10s, self._rest.usage.order_count_1m

    @property
    def time_offset_ms(self) -> int:
        """Server time minus local time, as last measured (re-measured on -1021)."""
        return self._rest.offset_ms

    @property
    def ip_budget(self) -> RateBudget:
        """The request-weight budget of this client's egress IP (maybe shared)."""
        return self._rest.ip_budget

    @property
    def order_budget(self) -> RateBudget:
        """This account's new-order budget (10 s and 1 min windows)."""
        return self._rest.order_budget

    # --- market data -------------------------------------------------------------------------

    async def server_time(self) -> int:
        body = await self._rest.request("GET", "/fapi/v1/time", security=Security.NONE)
        return Fields(body, "server time").integer("serverTime")

    async def sync_time(self) -> int:
        """Measure and keep the server-time offset; returns it in ms."""
        return await self._rest.sync_time()

    async def exchange_info(self, *, refresh: bool = False) -> ExchangeInfo:
        if self._exchange_info is None or refresh:
            body = await self._rest.request("GET", "/fapi/v1/exchangeInfo", security=Security.NONE)
            self._exchange_info = ExchangeInfo.from_json(body)
        return self._exchange_info

    async def symbol_rules(self, symbol: str) -> SymbolRules:
        return SymbolRules.from_exchange_info(await self.exchange_info(), symbol)

    async def mark_price(self, symbol: str) -> Decimal:
        body = await self._rest.request(
            "GET", "/fapi/v1/premiumIndex", {"symbol": symbol}, security=Security.NONE
        )
        return Fields(body, "premiumIndex").decimal("markPrice")

    # --- account -----------------------------------------------------------------------------

    async def set_leverage(self, symbol: str, leverage: int) -> LeverageResponse:
        params: Params = {"symbol": symbol, "leverage": leverage}
        body = await self._rest.request("POST", "/fapi/v1/leverage", params)
        return LeverageResponse.from_json(body)

    async def position_risk(self, symbol: str | None = None) -> list[PositionRisk]:
        body = await self._rest.request("GET", "/fapi/v3/positionRisk", {"symbol": symbol})
        return [PositionRisk.from_json(r.data) for r in fields_of_list(body, "positionRisk")]

    async def balance(self) -> list[Balance]:
        body = await self._rest.request("GET", "/fapi/v3/balance")
        return [Balance.from_json(r.data) for r in fields_of_list(body, "balance")]

    # --- orders ------------------------------------------------------------------------------

    async def place_order(
        self, symbol: str, side: str, type: str, quantity: Decimal, price: Decimal | None = None,
        *, reduce_only: bool = False, client_order_id: str, time_in_force: str | None = None,
    ) -> OrderResponse:
        """``POST /fapi/v1/order`` (LIMIT/MARKET), answered with the RESULT response."""
        if type == "LIMIT" and time_in_force is None:
            time_in_force = "GTC"
        params: Params = {
            "symbol": symbol, "side": side, "type": type, "timeInForce": time_in_force,
            "quantity": quantity, "price": price, "reduceOnly": True if reduce_only else None,
            "newClientOrderId": client_order_id, "newOrderRespType": "RESULT",
        }

        async def send() -> OrderResponse:
            body = await self._rest.request("POST", "/fapi/v1/order", params)
            return OrderResponse.from_json(body)

        async def lookup() -> OrderResponse | None:
            try:
                return await self.get_order(symbol, client_order_id=client_order_id)
            except UnknownOrder:
                return None

        return await self._place_safely(send, lookup, f"order {client_order_id}")

    async def place_algo_order(
        self, symbol: str, side: str, type: str, trigger_price: Decimal,
        quantity: Decimal | None = None, *, close_position: bool = False, reduce_only: bool = False,
        client_algo_id: str, working_type: str = "MARK_PRICE", price: Decimal | None = None,
    ) -> AlgoOrderResponse:
        """``POST /fapi/v1/algoOrder`` (``algoType=CONDITIONAL``): STOP_MARKET, TAKE_PROFIT_MARKET,
        or STOP/TAKE_PROFIT with ``price``. Give ``quantity`` or ``close_position=True``."""
        _check_algo_size(quantity, close_position, reduce_only)
        params: Params = {
            "algoType": "CONDITIONAL", "symbol": symbol, "side": side, "type": type,
            "quantity": quantity, "price": price, "triggerPrice": trigger_price,
            "workingType": working_type, "reduceOnly": True if reduce_only else None,
            "closePosition": True if close_position else None, "clientAlgoId": client_algo_id,
        }

        async def send() -> AlgoOrderResponse:
            body = await self._rest.request("POST", "/fapi/v1/algoOrder", params)
            return AlgoOrderResponse.from_json(body)

        async def lookup() -> AlgoOrderResponse | None:
            try:
                return await self.get_algo_order(client_algo_id=client_algo_id)
            except UnknownOrder:
                return None

        return await self._place_safely(send, lookup, f"algo order {client_algo_id}")

    async def cancel_order(
        self, symbol: str, order_id: int | None = None, client_order_id: str | None = None
    ) -> OrderResponse:
        ids = _id_params("order", order_id, client_order_id, "origClientOrderId")
        body = await self._rest.request("DELETE", "/fapi/v1/order", {"symbol": symbol, **ids})
        return OrderResponse.from_json(body)

    async def cancel_algo_order(
        self, algo_id: int | None = None, client_algo_id: str | None = None
    ) -> AlgoCancelResponse:
        ids = _id_params("algo", algo_id, client_algo_id, "clientAlgoId")
        body = await self._rest.request("DELETE", "/fapi/v1/algoOrder", ids)
        return AlgoCancelResponse.from_json(body)

    async def get_order(
        self, symbol: str, order_id: int | None = None, client_order_id: str | None = None
    ) -> OrderResponse:
        ids = _id_params("order", order_id, client_order_id, "origClientOrderId")
        body = await self._rest.request("GET", "/fapi/v1/order", {"symbol": symbol, **ids})
        return OrderResponse.from_json(body)

    async def get_algo_order(
        self, algo_id: int | None = None, client_algo_id: str | None = None
    ) -> AlgoOrderResponse:
        ids = _id_params("algo", algo_id, client_algo_id, "clientAlgoId")
        body = await self._rest.request("GET", "/fapi/v1/algoOrder", ids)
        return AlgoOrderResponse.from_json(body)

    async def open_orders(self, symbol: str | None = None) -> list[OrderResponse]:
        body = await self._rest.request("GET", "/fapi/v1/openOrders", {"symbol": symbol})
        return [OrderResponse.from_json(r.data) for r in fields_of_list(body, "openOrders")]

    async def open_algo_orders(self, symbol: str | None = None) -> list[AlgoOrderResponse]:
        body = await self._rest.request("GET", "/fapi/v1/openAlgoOrders", {"symbol": symbol})
        rows = _rows(body, "openAlgoOrders")
        return [AlgoOrderResponse.from_json(r.data) for r in rows]

    # --- user data stream (USER_STREAM: API key only, no signature) -------------------------

    async def new_listen_key(self) -> str:
        body = await self._rest.request("POST", "/fapi/v1/listenKey", security=Security.API_KEY)
        return Fields(body, "listenKey response").text("listenKey")

    async def keepalive_listen_key(self) -> str:
        """Extend the account's key by 60 min; returns it ("" if the answer omits it). The one
        REST call a streams pod makes all day (every key every 30 min): over ``lean`` if given."""
        body = await self._rest.request("PUT", "/fapi/v1/listenKey", security=Security.API_KEY,
                                        lean=True)
        return Fields(body, "listenKey response").opt_text("listenKey")

    async def close_listen_key(self) -> None:
        await self._rest.request("DELETE", "/fapi/v1/listenKey", security=Security.API_KEY)

    # --- unknown outcomes --------------------------------------------------------------------

    async def _place_safely(
        self, send: Callable[[], Awaitable[T]], lookup: Callable[[], Awaitable[T | None]], what: str
    ) -> T:
        """Send; on an unknown outcome, look up before retrying once, so nothing is placed twice."""
        try:
            return await send()
        except UnknownOutcome as exc:
            logger.warning("%s: outcome unknown (%s); looking it up before any retry", what, exc)
            found = await self._settled_lookup(lookup)
            if found is not None:
                return found
        try:
            return await send()
        except OrderRejected as exc:
            if exc.code != DUPLICATE_CLIENT_ID:
                raise
            found = await lookup()  # the first one exists after all
            if found is None:
                message = f"{what}: exists but cannot be read yet"
                raise UnknownOutcome(message, code=exc.code) from exc
            return found

    async def _settled_lookup(self, lookup: Callable[[], Awaitable[T | None]]) -> T | None:
        """Wait until the lost request's recvWindow has surely passed on the exchange, then look:
        from then on the request can no longer be executed, so "not found" is final."""
        await self._sleep((self._rest.recv_window_ms + _SETTLE_MARGIN_MS) / 1000)
        return await lookup()


def _check_algo_size(quantity: Decimal | None, close_position: bool, reduce_only: bool) -> None:
    if close_position and quantity is not None:
        raise InvalidInput("closePosition orders take no quantity", field="quantity")
    if close_position and reduce_only:
        raise InvalidInput("closePosition cannot be combined with reduceOnly", field="reduce_only")
    if not close_position and quantity is None:
        raise InvalidInput("give a quantity or close_position=True", field="quantity")


def _rows(body: Any, where: str) -> list[Fields]:
    """A list answer; also accepts ``{"orders": [...]}`` as some algo endpoints wrap it."""
    if isinstance(body, dict) and isinstance(body.get("orders"), list):
        body = body["orders"]
    return fields_of_list(body, where)
