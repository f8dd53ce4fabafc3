"""Prefect flows, the command line and deployments of lstm-forecast."""
