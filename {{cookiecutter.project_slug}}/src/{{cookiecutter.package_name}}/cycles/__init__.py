"""The link to a Cycles server: clients, errors, tenancy, transport, admin API."""
