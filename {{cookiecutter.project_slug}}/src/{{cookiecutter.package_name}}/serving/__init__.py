"""The production server's side of the app: gunicorn's settings and its worker classes.

gunicorn.conf.py imports this in gunicorn's master. Nothing here imports the app: a worker
imports it only after the gevent worker has patched the standard library.
"""
