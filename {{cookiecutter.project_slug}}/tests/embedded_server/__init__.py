"""The embedded Cycles server's own tests (a package, so its conftest is its own)."""
