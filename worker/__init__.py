"""What runs only in a worker process: arq's ``WorkerSettings``, the thin job functions, the
delivery lane, the periodic chores (heartbeat, sweep) and riding out a Redis outage."""
