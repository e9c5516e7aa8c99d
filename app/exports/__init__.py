"""Exports: a caller's request, the shared upstream task behind it, its life from queued to
expired, listing, cancel, idempotency, the merged CSV and the self-healing sweep."""
