"""What an operator sees: health and readiness, metrics, logs."""
