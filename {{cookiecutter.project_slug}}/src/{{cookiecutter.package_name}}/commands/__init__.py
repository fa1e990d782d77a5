"""`flask cycles ...` and `flask tenants ...`."""
