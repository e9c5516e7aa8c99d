"""``export-gateway``: the dev runner (``run``, ``sandbox``), a webhook receiver for trying it
out (``listen``) and the command-line client of the gateway's API (``submit``, ``status``,
``list``, ``cancel``, ``download``, ``check``)."""
