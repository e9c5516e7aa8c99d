"""The HTTP edge shared by every domain's routes: API keys, FastAPI dependencies, the direct
route for hot paths, problem+json errors, request guards, OpenAPI docs, health and metrics.

Nothing here holds a business rule: routes parse, call a service, and shape the answer.
"""
