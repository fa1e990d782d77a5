"""Budget alerts: Cycles' threshold events in, verified and deduplicated, forwarded signed to
each tenant's own URL from a background worker (store, signatures, events, forwarder)."""
