"""HTTP: routes, the guard, streaming, bodies, schemas and the API document."""
