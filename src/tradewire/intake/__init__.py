"""Signal intake: every source (Discord CDP monitor, Discord bot, TradingView, API) produces a
``RawMessage``; one parser and one set of safety checks decide execute / confirm / reject."""
