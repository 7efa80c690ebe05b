"""PC side: the queue worker and the backtest engine."""
