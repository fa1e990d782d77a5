"""Helpers for the template's own tests (``from support.<module> import ...``).

``resilience_driver.py`` is the exception: it is never imported here, test_resilience.py
copies it next to a bake and runs it there.
"""
