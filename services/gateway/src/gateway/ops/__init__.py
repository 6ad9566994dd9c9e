"""Operating the gateway: metrics, tracing and health."""
