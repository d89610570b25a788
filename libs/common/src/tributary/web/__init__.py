"""What every service's HTTP API shares: one error body, request limits, parameter types."""
