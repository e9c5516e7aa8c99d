"""The operator console (``/console``): see and steer the gateway from a browser.

Another thin edge over the same services as the API (``ExportService``, ``WebhookService``):
server-rendered pages (Jinja2, autoescaped) with a little htmx (vendored in ``static/``, no CDN,
no build step) that refreshes a page's fragment while anything on it is unfinished.

Who sees what: a client's API key shows that client's exports, exactly as the API would; a key
in ``GATEWAY_ADMIN_KEYS`` shows every client's (an admin acts on an export as its own client).

The threat model, and the answer to each threat:

* A stolen cookie: HttpOnly (no script reads it), SameSite=Strict (no other site sends it),
  signed with a timestamp and backed by a session in Redis that expires after
  ``GATEWAY_CONSOLE_SESSION_SECONDS``; signing out deletes the session; a key removed from the
  settings ends its sessions.
* Cross-site requests: every form that changes something carries a CSRF token bound to the
  session (403 without it), the sign-in form one bound to a nonce cookie; SameSite=Strict on
  top.
* Hostile data (metadata, filters, upstream answers, webhook receivers' answers): every value
  is escaped by the templates (autoescape on, for every template); a strict
  Content-Security-Policy allows only this origin's script and stylesheet, so even a missed
  escape could not run inline script.
* Key guessing: sign-in attempts are limited per client address
  (``GATEWAY_CONSOLE_SIGNIN_PER_MINUTE``, a sliding window in Redis shared by every API
  process); keys are compared in constant time.

Rooms: ``routes.py`` (thin), ``service.py`` (sessions and page contents, no framework),
``store.py`` (its Redis keys), ``schemas.py`` (view models), ``templates/``, ``static/``.
"""
