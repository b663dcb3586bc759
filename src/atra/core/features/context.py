"""One description of what a model's features read, and one function that assembles it.

A meta model is trained on bar features; each feature names its inputs in the registry
(``candles``, ``funding``, ``counterpart``, ``btc``, ``series:<name>``). :class:`ModelInputs`
is that list boiled down for one model: which side data it needs and how many bars of history
its features warm up on. It is derived from the model's feature names
(:meth:`ModelInputs.from_features`) and saved in the model's metadata (:meth:`to_dict`).

:func:`assemble_context` is the ONE place a :class:`FeatureContext` is built from frames:
research (:meth:`atra.research.dataset.Universe.context`), the backtest and ``atra signals``
(through the universe), replay and the live loop (:class:`atra.live.feed.CandleFeed`). Given
the same frames, every caller computes the same features.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from atra.core.features.external import SERIES
from atra.core.features.frame import FeatureContext, FeatureSpec
from atra.core.features.registry import HISTORY_BARS, feature_specs
from atra.core.features.sources import PointInTimeSeries
from atra.core.types import Market, Timeframe
from atra.errors import ConfigError, DataError

__all__ = [
    "EVENT_ATTRIBUTES",
    "QUOTE_ASSETS",
    "ModelInputs",
    "SeriesInput",
    "assemble_context",
    "base_asset_of",
    "counterpart_market",
    "missing_inputs",
    "series_config_problem",
]

EVENT_ATTRIBUTES: tuple[str, ...] = ("side", "sl_dist_pct", "tp1_dist_pct")
"""Model columns that are attributes of the signal, not bar features (the decision module's
``EVENT_FEATURES``; repeated here because that module imports this one)."""

_SIDE_INPUTS = ("funding", "counterpart", "btc")

QUOTE_ASSETS: tuple[str, ...] = ("USDT", "USDC", "FDUSD", "BUSD", "TUSD", "DAI", "USD", "EUR",
                                 "TRY", "BTC", "ETH", "BNB")  # fmt: skip
"""Quote assets a symbol may end with (longest match first): ``ETHUSDT`` -> base ``ETH``."""


def counterpart_market(market: Market) -> Market:
    """The other market of ``market``: a perpetual's spot twin, a spot pair's perpetual."""
    return Market.PERP if market is Market.SPOT else Market.SPOT


def base_asset_of(symbol: str) -> str | None:
    """The base asset of an exchange symbol ending with one of :data:`QUOTE_ASSETS`
    (``ETHUSDT`` -> ``ETH``, ``ETHBTC`` -> ``ETH``); None when no known quote ends it."""
    for quote in sorted(QUOTE_ASSETS, key=len, reverse=True):
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return symbol[: -len(quote)]
    return None


@dataclass(frozen=True, slots=True, eq=False)
class SeriesInput:
    """A configured external series and the symbols it applies to: every symbol when
    ``applies_to`` is empty (market-wide), else the symbols whose base asset is listed."""

    series: PointInTimeSeries
    applies_to: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.series.name

    def applies(self, symbol: str) -> bool:
        return not self.applies_to or base_asset_of(symbol) in self.applies_to


def series_config_problem(
    name: str,
    family: str,
    lag_ms: float,
    columns: Sequence[str],
    applies_to: Sequence[str],
    source: str | None,
    asset: str | None,
    *,
    has_url: bool = False,
) -> str | None:
    """What is wrong with one configured series (``"key: why"``), None when nothing.

    Columns are identifiers; base assets upper-case; a coinmetrics source has an asset and
    columns it serves (a built-in series: its own when none are named), fear_greed serves
    ``fear_greed``. A built-in series name
    (:data:`~atra.core.features.external.SERIES`) keeps the built-in's family, scope, source
    and columns, and a lag no shorter than when its values are known (a shorter one would let
    its generic features peek)."""
    bad_cols = [c for c in columns if not c.isidentifier()]
    if bad_cols or len(set(columns)) != len(columns):
        return f"columns: expected unique column names (letters, digits, _), got {list(columns)}"
    bad_bases = [b for b in applies_to if not (b.isascii() and b.isalnum() and b.isupper())]
    if bad_bases or len(set(applies_to)) != len(applies_to):
        return f"applies_to: expected unique upper-case base assets such as ETH, got {bad_bases}"
    cm = sorted({c for r in SERIES.values() if r.source == "coinmetrics" for c in r.columns})
    if source != "coinmetrics" and asset is not None:
        return "asset: only a coinmetrics source has an asset"
    if source is None and has_url:
        return "url: only a series with a source has a URL"
    if source == "coinmetrics" and asset is None:
        return 'asset: a coinmetrics source needs its asset (e.g. "btc")'
    unnamed = not columns and name not in SERIES  # a built-in series: its own columns
    if source == "coinmetrics" and (unnamed or not set(columns) <= set(cm)):
        return f"columns: coinmetrics serves {', '.join(cm)}; got {list(columns)}"
    if source == "fear_greed" and tuple(columns) not in ((), ("fear_greed",)):
        return f'columns: fear_greed serves ["fear_greed"], got {list(columns)}'
    rule = SERIES.get(name)
    if rule is None:
        return None
    where = f"the built-in series {name}"
    bases = () if rule.base_asset is None else (rule.base_asset,)
    kind = "fear_greed" if rule.source == "alternative.me" else "coinmetrics"
    lacking = [c for c in rule.columns if columns and c not in columns]
    if family != rule.family.value:
        return f"family: {where} is {rule.family.value}, not {family}"
    if lag_ms < rule.lag_ms:
        return (
            f"lag_hours: {lag_ms / 3_600_000:g} is shorter than when {where} is known "
            f"({rule.lag_ms / 3_600_000:g} h after its time; ../shared/series/README.md)"
        )
    if tuple(applies_to) != bases:
        scope = str(list(bases)) if bases else '"market"'
        return f"applies_to: {where} applies to {scope}"
    if source is not None and source != kind:
        return f"source: {where} comes from {kind}, not {source}"
    if source == "coinmetrics" and asset != name.split("_")[1]:
        return f"asset: {where} is Coin Metrics asset {name.split('_')[1]!r}"
    if lacking:
        return f"columns: {where} needs {', '.join(lacking)} for its features"
    return None


@dataclass(frozen=True, slots=True)
class ModelInputs:
    """The side data a model's features read, and the history they need.

    ``series`` names the external point-in-time series; ``warmup_bars`` is the longest
    feature warm-up (bars of the same gap-free segment before a value exists);
    :attr:`history_bars` the candles a per-bar caller keeps so its values match a backtest
    started earlier (at least :data:`HISTORY_BARS`).
    """

    needs_funding: bool = False
    needs_counterpart: bool = False
    needs_btc: bool = False
    series: tuple[str, ...] = ()
    warmup_bars: int = 0

    @property
    def history_bars(self) -> int:
        return max(HISTORY_BARS, self.warmup_bars + 1)

    @property
    def names(self) -> tuple[str, ...]:
        """The inputs beside the candles, as the registry names them."""
        flags = (self.needs_funding, self.needs_counterpart, self.needs_btc)
        side = [name for name, need in zip(_SIDE_INPUTS, flags, strict=True) if need]
        return (*side, *(f"series:{s}" for s in self.series))

    @classmethod
    def from_features(
        cls,
        names: Iterable[str],
        *,
        series: Sequence[PointInTimeSeries] = (),
        registry: Mapping[str, FeatureSpec] | None = None,
    ) -> ModelInputs:
        """The inputs of the features ``names`` (event attributes are skipped). A name that
        is neither a registered feature nor one of ``series``' is a :class:`ConfigError`."""
        specs = feature_specs(FeatureContext(series=tuple(series)), registry)
        bar = [n for n in names if n not in EVENT_ATTRIBUTES]
        unknown = [n for n in bar if n not in specs]
        if unknown:
            raise ConfigError(
                f"model feature(s) {', '.join(unknown[:5])} are not in the feature registry"
            )
        used = {i for n in bar for i in specs[n].inputs}
        return cls(
            needs_funding="funding" in used,
            needs_counterpart="counterpart" in used,
            needs_btc="btc" in used,
            series=tuple(sorted(i.split(":", 1)[1] for i in used if i.startswith("series:"))),
            warmup_bars=max((specs[n].warmup_bars for n in bar), default=0),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON fields (for a model's metadata)."""
        return {
            "needs_funding": self.needs_funding,
            "needs_counterpart": self.needs_counterpart,
            "needs_btc": self.needs_btc,
            "series": list(self.series),
            "warmup_bars": self.warmup_bars,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "model inputs") -> ModelInputs:
        """The inverse of :meth:`to_dict`; a missing or mistyped key is a :class:`DataError`
        naming it."""
        out: dict[str, Any] = {}
        for key in ("needs_funding", "needs_counterpart", "needs_btc"):
            value = data.get(key)
            if not isinstance(value, bool):
                raise DataError(f"{where}: {key} must be true or false, got {value!r}")
            out[key] = value
        series = data.get("series")
        if not isinstance(series, list) or not all(isinstance(s, str) for s in series):
            raise DataError(f"{where}: series must be a list of names, got {series!r}")
        warmup = data.get("warmup_bars")
        if not isinstance(warmup, int) or isinstance(warmup, bool) or warmup < 0:
            raise DataError(f"{where}: warmup_bars must be an integer >= 0, got {warmup!r}")
        return cls(**out, series=tuple(series), warmup_bars=warmup)


def assemble_context(
    timeframe: Timeframe,
    market: Market,
    *,
    funding: pd.DataFrame | None = None,
    counterpart: pd.DataFrame | None = None,
    btc: pd.DataFrame | None = None,
    series: Sequence[PointInTimeSeries | SeriesInput] = (),
    symbol: str | None = None,
) -> FeatureContext:
    """The feature context of one symbol on ``market``: its funding history, its candles on
    the other market (:func:`counterpart_market`), BTCUSDT candles of ``market`` and the
    external series that apply to ``symbol`` (a :class:`SeriesInput` scoped to base assets is
    left out of other symbols' contexts; it needs ``symbol``). Empty frames count as absent
    (the features of that input are NaN)."""

    def present(frame: pd.DataFrame | None) -> pd.DataFrame | None:
        return frame if frame is not None and not frame.empty else None

    chosen: list[PointInTimeSeries] = []
    for item in series:
        if isinstance(item, SeriesInput):
            if item.applies_to and symbol is None:
                raise ConfigError(f"series {item.name!r} is scoped to base assets: pass symbol=")
            if symbol is not None and not item.applies(symbol):
                continue
            item = item.series
        chosen.append(item)
    names = [s.name for s in chosen]
    if len(set(names)) != len(names):
        raise ConfigError(f"feature context: series names must be unique, got {names}")
    return FeatureContext(
        timeframe=timeframe,
        funding=present(funding),
        counterpart=present(counterpart),
        counterpart_market=counterpart_market(market),
        btc=present(btc),
        series=tuple(chosen),
    )


def missing_inputs(inputs: ModelInputs, ctx: FeatureContext) -> list[str]:
    """The inputs ``inputs`` names that ``ctx`` lacks."""
    have = {
        "funding": ctx.funding is not None,
        "counterpart": ctx.counterpart is not None,
        "btc": ctx.btc is not None,
    }
    have.update({f"series:{s.name}": True for s in ctx.series})
    return [name for name in inputs.names if not have.get(name, False)]
