"""The gateway's code, one room per concern.

``main.py`` builds the API and ``config.py`` holds the one ``Settings``; everything else lives in
a room named for what it is:

* ``web/``: the HTTP edge (authentication, problem+json, request guards, docs, health);
* ``platform/``: plumbing every room stands on (Redis connections and key names, the job queue,
  clock, logs, metrics, the error tree);
* ``wiring/``: the one place a process's parts are built and connected;
* ``exports/``, ``upstream/``, ``webhooks/``: the domains, each with routes, schemas, service
  and store;
* ``sandbox/``: a stand-alone imitation of the Clickwrap API for the dev runner and tests;
* ``cli/``: the ``export-gateway`` command.

Data flows one way: routes → services → stores and upstream (docs/ARCHITECTURE.md).
"""
