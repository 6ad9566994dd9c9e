"""livechat runtime: what every service runs on (NATS connection, pull loop, group commit,
reconnect, metrics, logging, telemetry, SQL helpers). The wire itself is in `contracts`."""
