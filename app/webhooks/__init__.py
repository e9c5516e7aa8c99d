"""Webhooks: signed events (Standard Webhooks), delivery with retries and a log of every attempt,
and the callback address policy that keeps deliveries off private networks."""
