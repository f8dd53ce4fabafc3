"""Operations on trained models: registry, champion and challenger, forecasting ahead, tuning, backtests, reports."""
