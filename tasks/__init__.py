"""Stages, core (store, config) and operations on models of lstm-forecast; installed as `lstm_forecast.tasks`."""
