"""Token change events: the append-only log written with each change, the history and feed
APIs over it, and the relay that publishes it to NATS JetStream."""
