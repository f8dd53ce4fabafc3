"""The eight stages of lstm-forecast, its config and its artifact store."""
