"""The composition root: ``runtime.build_runtime`` builds one process's parts (Redis, HTTP
clients, stores, services) from ``Settings``, identically for the API and the worker."""
