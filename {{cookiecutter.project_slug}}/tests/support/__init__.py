"""Test helpers shared by several test modules (``from support.<module> import ...``)."""
