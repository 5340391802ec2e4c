"""lookup-proxy: a reverse proxy that stops staff from mining a customer-lookup backend.

The walk of one lookup is identify → justify → target → guard → forward → learn → record;
each step lives in the module named after it, and :mod:`lookup_proxy.app` only wires them.
"""

from lookup_proxy import native

__version__ = "0.1.0"

native.install()
