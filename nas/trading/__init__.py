"""Trading, Phase 0 (docs/trading.md): the core the `krx trade` CLI and the HTTP faces call."""
