"""The serving API: live profiles, the HTTP event collector, API keys, health and metrics."""
