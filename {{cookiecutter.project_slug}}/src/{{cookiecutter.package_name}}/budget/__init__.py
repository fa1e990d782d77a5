"""The money-safety core: holds, pricing, reservations, the hold keeper."""
