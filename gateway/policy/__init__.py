"""The routing policy as data: its schema, and loading a file with positions and strict
validation. Pure: it imports nothing of the request path or the providers (the runtime built
from it is :mod:`gateway.runtime`)."""
