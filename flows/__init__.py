"""Prefect flows, the command line and deployments of lstm-forecast (installed as `lstm_forecast.flows`)."""
