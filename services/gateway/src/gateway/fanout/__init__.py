"""NATS -> clients: the event hub, each client's feed (replay + live), resume and signals."""
