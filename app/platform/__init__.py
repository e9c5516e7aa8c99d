"""Plumbing that every room stands on and that knows no domain: Redis connections and every
Redis key name, the job queue (its protocol and the one adapter that knows arq), the clock,
the error tree, logs, metrics, rate limits, worker heartbeats and a private Redis server for
development and tests.
"""
