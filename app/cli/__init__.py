"""``export-gateway``: the dev runner (``run``, ``sandbox``) and the command-line client of the
gateway's API (``submit``, ``status``, ``list``, ``cancel``, ``download``, ``check``)."""
