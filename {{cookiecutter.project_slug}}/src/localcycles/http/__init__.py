"""The HTTP server: ``codec`` (HTTP/1.1 bytes in, bytes out), ``front`` (one thread
multiplexing every connection), ``routes`` (authentication, permissions, validation, then
the ledger) and ``server`` (the socket and worker threads that tie them together).
"""
