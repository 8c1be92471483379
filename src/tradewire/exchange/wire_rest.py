"""Wire structs of REST responses, keyed exactly as the exchange's JSON (reference §5).

Only the fields this service reads are kept; everything else is ignored. Fields the exchange
does not always send (or sends as ``""``/``null``) default to zero/empty.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Self

from tradewire.exchange.fields import Fields


@dataclass(frozen=True)
class ApiError:
    """An error body ``{"code": -2013, "msg": "Order does not exist."}``."""

    code: int
    msg: str

    @classmethod
    def from_json(cls, data: object) -> Self:
        r = Fields(data, "error body")
        return cls(code=r.integer("code"), msg=r.opt_text("msg"))


@dataclass(frozen=True)
class OrderResponse:
    """``POST/GET/DELETE /fapi/v1/order`` and the rows of ``openOrders``."""

    orderId: int
    clientOrderId: str
    symbol: str
    status: str
    type: str
    origType: str
    side: str
    positionSide: str
    timeInForce: str
    price: Decimal
    avgPrice: Decimal
    origQty: Decimal
    executedQty: Decimal
    cumQuote: Decimal
    stopPrice: Decimal
    reduceOnly: bool
    closePosition: bool
    workingType: str
    updateTime: int

    @classmethod
    def from_json(cls, data: object, where: str = "order response") -> Self:
        r = Fields(data, where)
        return cls(
            orderId=r.integer("orderId"), clientOrderId=r.text("clientOrderId"),
            symbol=r.text("symbol"), status=r.text("status"), type=r.text("type"),
            origType=r.opt_text("origType"), side=r.text("side"),
            positionSide=r.opt_text("positionSide", "BOTH"), timeInForce=r.opt_text("timeInForce"),
            price=r.decimal_or_zero("price"), avgPrice=r.decimal_or_zero("avgPrice"),
            origQty=r.decimal("origQty"), executedQty=r.decimal_or_zero("executedQty"),
            cumQuote=r.decimal_or_zero("cumQuote"), stopPrice=r.decimal_or_zero("stopPrice"),
            reduceOnly=r.opt_flag("reduceOnly"), closePosition=r.opt_flag("closePosition"),
            workingType=r.opt_text("workingType"), updateTime=r.opt_integer("updateTime"),
        )


@dataclass(frozen=True)
class AlgoOrderResponse:
    """``POST/GET /fapi/v1/algoOrder`` and the rows of ``openAlgoOrders`` (reference §5.3)."""

    algoId: int
    clientAlgoId: str
    algoType: str
    orderType: str
    symbol: str
    side: str
    positionSide: str
    timeInForce: str
    quantity: Decimal
    algoStatus: str
    actualOrderId: str  # "" until triggered
    actualPrice: Decimal
    triggerPrice: Decimal
    price: Decimal
    workingType: str
    closePosition: bool
    priceProtect: bool
    reduceOnly: bool
    createTime: int
    updateTime: int
    triggerTime: int

    @classmethod
    def from_json(cls, data: object, where: str = "algo order response") -> Self:
        r = Fields(data, where)
        return cls(
            algoId=r.integer("algoId"), clientAlgoId=r.text("clientAlgoId"),
            algoType=r.opt_text("algoType", "CONDITIONAL"), orderType=r.text("orderType"),
            symbol=r.text("symbol"), side=r.text("side"),
            positionSide=r.opt_text("positionSide", "BOTH"), timeInForce=r.opt_text("timeInForce"),
            quantity=r.decimal_or_zero("quantity"), algoStatus=r.text("algoStatus"),
            actualOrderId=str(r.data.get("actualOrderId") or ""),
            actualPrice=r.decimal_or_zero("actualPrice"),
            triggerPrice=r.decimal_or_zero("triggerPrice"),
            price=r.decimal_or_zero("price"), workingType=r.opt_text("workingType"),
            closePosition=r.opt_flag("closePosition"), priceProtect=r.opt_flag("priceProtect"),
            reduceOnly=r.opt_flag("reduceOnly"), createTime=r.opt_integer("createTime"),
            updateTime=r.opt_integer("updateTime"), triggerTime=r.opt_integer("triggerTime"),
        )


@dataclass(frozen=True)
class AlgoCancelResponse:
    """``DELETE /fapi/v1/algoOrder``: ``{algoId, clientAlgoId, code: "200", msg: "success"}``."""

    algoId: int
    clientAlgoId: str
    code: str
    msg: str

    @classmethod
    def from_json(cls, data: object) -> Self:
        r = Fields(data, "algo cancel response")
        return cls(
            algoId=r.integer("algoId"), clientAlgoId=r.opt_text("clientAlgoId"),
            code=str(r.data.get("code", "")), msg=r.opt_text("msg"),
        )


@dataclass(frozen=True)
class PositionRisk:
    """A row of ``GET /fapi/v3/positionRisk`` (only symbols with a position or open orders)."""

    symbol: str
    positionSide: str
    positionAmt: Decimal
    entryPrice: Decimal
    breakEvenPrice: Decimal
    markPrice: Decimal
    unRealizedProfit: Decimal
    liquidationPrice: Decimal
    notional: Decimal
    marginAsset: str
    updateTime: int

    @classmethod
    def from_json(cls, data: object, where: str = "position risk") -> Self:
        r = Fields(data, where)
        return cls(
            symbol=r.text("symbol"), positionSide=r.opt_text("positionSide", "BOTH"),
            positionAmt=r.decimal("positionAmt"), entryPrice=r.decimal_or_zero("entryPrice"),
            breakEvenPrice=r.decimal_or_zero("breakEvenPrice"),
            markPrice=r.decimal_or_zero("markPrice"),
            unRealizedProfit=r.decimal_or_zero("unRealizedProfit"),
            liquidationPrice=r.decimal_or_zero("liquidationPrice"),
            notional=r.decimal_or_zero("notional"),
            marginAsset=r.opt_text("marginAsset"), updateTime=r.opt_integer("updateTime"),
        )


@dataclass(frozen=True)
class Balance:
    """A row of ``GET /fapi/v3/balance``."""

    asset: str
    balance: Decimal
    crossWalletBalance: Decimal
    crossUnPnl: Decimal
    availableBalance: Decimal
    maxWithdrawAmount: Decimal
    updateTime: int

    @classmethod
    def from_json(cls, data: object, where: str = "balance") -> Self:
        r = Fields(data, where)
        return cls(
            asset=r.text("asset"), balance=r.decimal("balance"),
            crossWalletBalance=r.decimal_or_zero("crossWalletBalance"),
            crossUnPnl=r.decimal_or_zero("crossUnPnl"),
            availableBalance=r.decimal("availableBalance"),
            maxWithdrawAmount=r.decimal_or_zero("maxWithdrawAmount"),
            updateTime=r.opt_integer("updateTime"),
        )


@dataclass(frozen=True)
class LeverageResponse:
    """``POST /fapi/v1/leverage``."""

    symbol: str
    leverage: int
    maxNotionalValue: Decimal

    @classmethod
    def from_json(cls, data: object) -> Self:
        r = Fields(data, "leverage response")
        return cls(
            symbol=r.text("symbol"), leverage=r.integer("leverage"),
            maxNotionalValue=r.decimal_or_zero("maxNotionalValue"),
        )


@dataclass(frozen=True)
class PriceFilter:
    filterType: str  # PRICE_FILTER
    minPrice: Decimal
    maxPrice: Decimal
    tickSize: Decimal


@dataclass(frozen=True)
class LotSizeFilter:
    filterType: str  # LOT_SIZE or MARKET_LOT_SIZE
    minQty: Decimal
    maxQty: Decimal
    stepSize: Decimal


@dataclass(frozen=True)
class MinNotionalFilter:
    filterType: str  # MIN_NOTIONAL
    notional: Decimal


SymbolFilter = PriceFilter | LotSizeFilter | MinNotionalFilter


def _read_filter(r: Fields) -> SymbolFilter | None:
    kind = r.text("filterType")
    if kind == "PRICE_FILTER":
        return PriceFilter(
            kind, r.decimal("minPrice"), r.decimal("maxPrice"), r.decimal("tickSize")
        )
    if kind in ("LOT_SIZE", "MARKET_LOT_SIZE"):
        return LotSizeFilter(kind, r.decimal("minQty"), r.decimal("maxQty"), r.decimal("stepSize"))
    if kind == "MIN_NOTIONAL":
        return MinNotionalFilter(kind, r.decimal("notional"))
    return None  # filters this service does not enforce itself


@dataclass(frozen=True)
class SymbolInfo:
    """One ``exchangeInfo.symbols[]`` entry with the filters we enforce client-side."""

    symbol: str
    status: str
    baseAsset: str
    quoteAsset: str
    pricePrecision: int
    quantityPrecision: int
    filters: tuple[SymbolFilter, ...]

    def filter(self, filter_type: str) -> SymbolFilter | None:
        return next((f for f in self.filters if f.filterType == filter_type), None)

    @classmethod
    def read(cls, r: Fields) -> Self:
        found = (_read_filter(f) for f in r.objects("filters"))
        return cls(
            symbol=r.text("symbol"), status=r.opt_text("status", "TRADING"),
            baseAsset=r.opt_text("baseAsset"), quoteAsset=r.opt_text("quoteAsset"),
            pricePrecision=r.opt_integer("pricePrecision"),
            quantityPrecision=r.opt_integer("quantityPrecision"),
            filters=tuple(f for f in found if f is not None),
        )


@dataclass(frozen=True)
class ExchangeInfo:
    """``GET /fapi/v1/exchangeInfo`` (symbols and their filters)."""

    serverTime: int
    symbols: tuple[SymbolInfo, ...]

    def symbol(self, name: str) -> SymbolInfo | None:
        return next((s for s in self.symbols if s.symbol == name), None)

    @classmethod
    def from_json(cls, data: object) -> Self:
        r = Fields(data, "exchangeInfo")
        return cls(
            serverTime=r.opt_integer("serverTime"),
            symbols=tuple(SymbolInfo.read(s) for s in r.objects("symbols")),
        )
