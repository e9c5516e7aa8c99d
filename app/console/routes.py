"""Thin routes of the operator console (``/console``): read the session and the form, call
``ConsoleService``, render a template.

Pages are whole HTML documents; ``.../rows``, ``.../panel`` and ``/console/health`` are the
fragments that htmx (vendored under ``/console/static``) swaps in while anything shown is
unfinished. Every form that changes something carries the session's CSRF token, and a post
without it answers 403 (problem+json naming ``csrf_token``). Templates autoescape every value.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from app.console.schemas import SignedIn
from app.console.service import ConsoleService, ago, archive_state, as_json, countdown
from app.exports.schemas import FINISHED, ExportStatus
from app.platform.errors import Forbidden, GatewayError, MemberProblem
from app.web.deps import runtime_of

HERE = Path(__file__).resolve().parent
COOKIE = "gw_console"
SIGNIN_COOKIE = "gw_console_signin"
SIGNIN_COOKIE_SECONDS = 3600
# How often a page showing something unfinished asks for its fragment again.
REFRESH_SECONDS = 2
STATUSES: tuple[str, ...] = ("queued", "running", "completed", "failed", "canceled", "expired")

_env = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=True,  # every value printed is HTML-escaped, whatever the template's name
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters["ago"] = ago
_env.filters["countdown"] = countdown
_env.filters["archive_state"] = archive_state
_env.filters["json"] = as_json
_env.filters["when"] = lambda moment: moment.strftime("%Y-%m-%d %H:%M:%S") if moment else "—"
_env.globals.update(refresh_seconds=REFRESH_SECONDS, statuses=STATUSES)
templates = Jinja2Templates(env=_env)

router = APIRouter(prefix="/console", include_in_schema=False)
static = StaticFiles(directory=HERE / "static")

_HEADERS = {
    # Scripts, styles and forms from this origin only; never framed; no referrer leaks ids.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def console(request: Request) -> ConsoleService:
    service: ConsoleService = runtime_of(request).console
    return service


async def _page(
    request: Request, name: str, context: dict[str, Any], status_code: int = 200
) -> HTMLResponse:
    """Render a template; a whole page (not a ``_fragment``) of a signed-in viewer also gets
    the health strip."""
    context = {
        "signed_in": None,
        "notice": None,
        "problem": None,
        "health": None,
        "nav": [(page, f"/console/{page}") for page in console(request).pages],
        **context,
    }
    if not name.startswith("_") and context["signed_in"] is not None and not context["health"]:
        context["health"] = await console(request).health()
    response = templates.TemplateResponse(request, name, context, status_code)
    response.headers.update(_HEADERS)
    return response


def _to_signin(request: Request) -> Response:
    """Back to the sign-in page: a redirect, or for an htmx fragment request, HX-Redirect."""
    if request.headers.get("hx-request"):
        return Response(status_code=401, headers={"HX-Redirect": "/console/sign-in"})
    return RedirectResponse("/console/sign-in", status_code=303)


async def _signed_in(request: Request) -> SignedIn | None:
    return await console(request).signed_in(request.cookies.get(COOKIE))


async def _form(request: Request) -> dict[str, str]:
    """An HTML form's fields (the first value of each); the body guard capped its size."""
    text = (await request.body()).decode("utf-8", errors="replace")
    return {k: v[0] for k, v in parse_qs(text, keep_blank_values=True).items()}


async def _checked_form(request: Request, signed_in: SignedIn) -> dict[str, str]:
    form = await _form(request)
    if not await console(request).csrf_ok(signed_in, form.get("csrf_token")):
        detail = "the form's CSRF token is missing or wrong; reload the page and try again"
        raise Forbidden(detail, errors=[MemberProblem("csrf_token", detail)])
    return form


# -- sign-in ---------------------------------------------------------------------------------


@router.get("")
async def root() -> Response:
    return RedirectResponse("/console/exports", status_code=303)


@router.get("/sign-in")
async def signin_page(request: Request) -> Response:
    return await _signin_form(request)


async def _signin_form(
    request: Request, problem: str | None = None, status_code: int = 200
) -> Response:
    nonce = request.cookies.get(SIGNIN_COOKIE)
    fresh = not nonce or len(nonce) > 64
    if fresh:
        nonce = secrets.token_urlsafe(24)
    assert nonce is not None
    token = await console(request).signin_token(nonce)
    response = await _page(
        request, "signin.html", {"signin_token": token, "problem": problem}, status_code
    )
    if fresh:
        _set_cookie(request, response, SIGNIN_COOKIE, nonce, SIGNIN_COOKIE_SECONDS)
    return response


@router.post("/sign-in")
async def sign_in(request: Request) -> Response:
    service = console(request)
    form = await _form(request)
    nonce = request.cookies.get(SIGNIN_COOKIE)
    if not await service.signin_token_ok(nonce, form.get("csrf_token")):
        detail = "the sign-in form's CSRF token is missing or wrong; reload the page"
        raise Forbidden(detail, errors=[MemberProblem("csrf_token", detail)])
    address = request.client.host if request.client else "unknown"
    wait = await service.signin_wait_seconds(address)
    if wait:
        response = await _signin_form(
            request, f"Too many sign-in attempts; try again in {wait} s.", 429
        )
        response.headers["Retry-After"] = str(wait)
        return response
    cookie = await service.sign_in(form.get("key", ""))
    if cookie is None:
        return await _signin_form(request, "That key is not valid.", 401)
    response = RedirectResponse("/console/exports", status_code=303)
    _set_cookie(request, response, COOKIE, cookie, service.session_seconds)
    response.delete_cookie(SIGNIN_COOKIE, path="/console")
    return response


@router.post("/sign-out")
async def sign_out(request: Request) -> Response:
    signed_in = await _signed_in(request)
    if signed_in is None:
        return _to_signin(request)
    await _checked_form(request, signed_in)
    await console(request).sign_out(signed_in)
    response = RedirectResponse("/console/sign-in", status_code=303)
    response.delete_cookie(COOKIE, path="/console")
    return response


def _set_cookie(
    request: Request, response: Response, name: str, value: str, seconds: float
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=int(seconds),
        path="/console",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


# -- exports ---------------------------------------------------------------------------------


def _filters(request: Request) -> tuple[ExportStatus | None, str | None, str | None, str | None]:
    """status, client, cursor from the query, and a problem to show for a bad status."""
    query = request.query_params
    status = query.get("status") or None
    client = query.get("client") or None
    cursor = query.get("cursor") or None
    if status is not None and status not in STATUSES:
        return None, client, cursor, f"Unknown status {status!r}: showing every status."
    return status, client, cursor, None  # type: ignore[return-value]


async def _exports_context(request: Request, signed_in: SignedIn) -> tuple[dict[str, Any], int]:
    status, client, cursor, problem = _filters(request)
    code = 422 if problem else 200
    try:
        page = await console(request).exports_page(
            signed_in.viewer, status=status, client=client, cursor=cursor
        )
    except GatewayError as exc:  # a cursor this console did not issue
        page = await console(request).exports_page(
            signed_in.viewer, status=status, client=client, cursor=None
        )
        problem, code = exc.detail, exc.status
    params = {k: v for k, v in {"status": page.status, "client": page.client}.items() if v}
    here = {**params, **({"cursor": cursor} if cursor else {})}
    context = {
        "signed_in": signed_in,
        "page": page,
        "problem": problem,
        "rows_url": "/console/exports/rows?" + urlencode(here),
        "next_url": (
            "/console/exports?" + urlencode({**params, "cursor": page.next_cursor})
            if page.next_cursor
            else None
        ),
        "first_url": "/console/exports?" + urlencode(params) if cursor else None,
    }
    return context, code


@router.get("/exports")
async def exports_page(request: Request) -> Response:
    signed_in = await _signed_in(request)
    if signed_in is None:
        return _to_signin(request)
    context, code = await _exports_context(request, signed_in)
    return await _page(request, "exports.html", context, code)


@router.get("/exports/rows")
async def exports_rows(request: Request) -> Response:
    signed_in = await _signed_in(request)
    if signed_in is None:
        return _to_signin(request)
    context, _ = await _exports_context(request, signed_in)
    return await _page(request, "_exports_rows.html", context)


async def _detail_context(request: Request, signed_in: SignedIn, export_id: str) -> dict[str, Any]:
    detail = await console(request).export_detail(signed_in.viewer, export_id)
    return {
        "signed_in": signed_in,
        "detail": detail,
        "finished": FINISHED,
        "notice": _NOTICES.get(request.query_params.get("done", "")),
    }


_NOTICES = {
    "paused": "Paused.",
    "resumed": "Resumed.",
    "run": "The feed's run has started.",
    "canceled": "Canceled.",
    "redelivered": "The latest event is being sent again.",
    "rerun": "A new export runs the same query.",
}


@router.get("/exports/{export_id}")
async def export_page(request: Request, export_id: str) -> Response:
    signed_in = await _signed_in(request)
    if signed_in is None:
        return _to_signin(request)
    try:
        context = await _detail_context(request, signed_in, export_id)
    except GatewayError as exc:
        return await _problem_page(request, signed_in, exc)
    return await _page(request, "export.html", context)


@router.get("/exports/{export_id}/panel")
async def export_panel(request: Request, export_id: str) -> Response:
    signed_in = await _signed_in(request)
    if signed_in is None:
        return _to_signin(request)
    try:
        context = await _detail_context(request, signed_in, export_id)
    except GatewayError as exc:
        return await _problem_page(request, signed_in, exc)
    return await _page(request, "_export_panel.html", context)


@router.post("/exports/{export_id}/{action}")
async def export_action(request: Request, export_id: str, action: str) -> Response:
    signed_in = await _signed_in(request)
    if signed_in is None:
        return _to_signin(request)
    await _checked_form(request, signed_in)
    service = console(request)
    target = export_id
    try:
        if action == "cancel":
            await service.cancel(signed_in.viewer, export_id)
            done = "canceled"
        elif action == "redeliver":
            await service.redeliver(signed_in.viewer, export_id)
            done = "redelivered"
        elif action == "rerun":
            target = (await service.rerun(signed_in.viewer, export_id)).id
            done = "rerun"
        else:
            return await _problem_page(
                request, signed_in, GatewayError(f"no console action {action!r}"), 404
            )
    except GatewayError as exc:
        try:
            context = await _detail_context(request, signed_in, export_id)
        except GatewayError:
            return await _problem_page(request, signed_in, exc)
        return await _page(request, "export.html", {**context, "problem": exc.detail}, exc.status)
    return RedirectResponse(f"/console/exports/{target}?done={done}", status_code=303)


async def _problem_page(
    request: Request, signed_in: SignedIn, exc: GatewayError, status_code: int | None = None
) -> Response:
    return await _page(
        request,
        "problem.html",
        {"signed_in": signed_in, "problem": exc.detail},
        status_code or exc.status,
    )


# -- health ----------------------------------------------------------------------------------


@router.get("/health")
async def health_strip(request: Request) -> Response:
    signed_in = await _signed_in(request)
    if signed_in is None:
        return _to_signin(request)
    health = await console(request).health()
    return await _page(request, "_health.html", {"signed_in": signed_in, "health": health})


# -- feeds ------------------------------------------------------------------------------------


@router.get("/feeds")
async def feeds_page(request: Request) -> Response:
    signed_in = await _signed_in(request)
    if signed_in is None:
        return _to_signin(request)
    client = request.query_params.get("client") or None
    cursor = request.query_params.get("cursor") or None
    try:
        feeds, next_cursor = await console(request).feeds_page(
            signed_in.viewer, client=client, cursor=cursor
        )
    except GatewayError as exc:
        return await _problem_page(request, signed_in, exc)
    params = {"client": client} if client and signed_in.viewer.admin else {}
    context = {
        "signed_in": signed_in,
        "active": "feeds",
        "feeds": feeds,
        "client": params.get("client"),
        "clients": console(request).clients if signed_in.viewer.admin else [],
        "notice": _NOTICES.get(request.query_params.get("done", "")),
        "next_url": (
            "/console/feeds?" + urlencode({**params, "cursor": next_cursor})
            if next_cursor
            else None
        ),
    }
    return await _page(request, "feeds.html", context)


@router.post("/feeds/{feed_id}/{action}")
async def feed_action(request: Request, feed_id: str, action: str) -> Response:
    signed_in = await _signed_in(request)
    if signed_in is None:
        return _to_signin(request)
    await _checked_form(request, signed_in)
    service = console(request)
    try:
        if action in ("pause", "resume"):
            await service.set_feed_paused(signed_in.viewer, feed_id, action == "pause")
            done = "paused" if action == "pause" else "resumed"
        elif action == "run":
            export = await service.run_feed(signed_in.viewer, feed_id)
            target = getattr(export, "id", None)
            if target:
                return RedirectResponse(f"/console/exports/{target}?done=run", status_code=303)
            done = "run"
        else:
            return await _problem_page(
                request, signed_in, GatewayError(f"no console action {action!r}"), 404
            )
    except GatewayError as exc:
        return await _problem_page(request, signed_in, exc)
    return RedirectResponse(f"/console/feeds?done={done}", status_code=303)
