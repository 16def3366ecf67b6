"""Telemetry of the control plane: every metric is declared in `metrics`."""
