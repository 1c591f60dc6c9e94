"""The join pages: an invitee's way from the invitation e-mail's link to a completed onboard, in a browser.

Server-rendered HTML (Jinja2 through starlette's templates), routed beside connexion's API; no JavaScript
and nothing from elsewhere. `/join/<token>` pages are opened by an invitation's link (the access log shows
them as `/join/…`); `/onboarding/…` pages belong to a signed-in session (a cookie holding a secret whose
digest the database keeps). Every POST carries a CSRF token equal to the browser's CSRF cookie, every page
the headers of SECURITY_HEADERS. The model code is the API's: accepting makes the onboard as
`POST /onboards` does, choosing a flow and finishing are `PUT /onboards/{id}`'s changes.
"""

import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from connexion import AsyncApp
from jsonschema import Draft4Validator
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.templating import Jinja2Templates

from handlers import unit_of_work
from models.accounts import User
from models.base import CONTROL_CHARACTERS, DomainError, NotFound, Refused, digest_of, rfc3339
from models.connections import Connection
from models.flows import Flow
from models.invitations import Invitation, JoinToken, LinkGone
from models.join import SESSION_TTL, JoinSession, SignInCode, count_failure, create_account, refuse_if_throttled
from models.onboards import Onboard
from models.outbox import OutboxMessage
from onboards import sandbox
from onboards.clients import client_of
from onboards.config import Settings
from onboards.problems import answer_for, refusal_headers
from onboards.validation import checks

HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=HERE / "templates" / "join")
STYLE = HERE / "static" / "onboards.css"
SESSION_COOKIE, CSRF_COOKIE, SANDBOX_COOKIE = "onboards_session", "onboards_csrf", "onboards_sandbox"
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
KIND_ROLE = {"recipient": "receive leads from them (you would be their buyer)",
             "source": "send leads to them (you would be their seller)"}


@dataclass
class Answer:
    """What a page's unit of work decided: a page to render or a place to go, and maybe a new session."""

    template: str = ""
    context: dict[str, Any] = field(default_factory=dict)
    status: int = 200
    redirect: str = ""
    cookies: dict[str, str] = field(default_factory=dict)  # to set: a new session's secret, the sandbox token


MESSAGES = {"name": "Fill this in: one line, at most 200 characters, without control characters.",
            "email": "Give one e-mail address, like name@example.com."}


class Rules:
    """The form fields' rules: openapi.yaml's own schemas for names and addresses, one source of truth."""

    def __init__(self, spec: dict) -> None:
        schemas = spec["components"]["schemas"]
        self.schemas = {"name": schemas["AccountWrite"]["properties"]["name"],
                        "email": schemas["InvitationRequest"]["properties"]["email"]}

    def problems(self, form: dict[str, str], **fields: str) -> dict[str, str]:
        """The fields of `form` that break their rule (`fields`: field → "name" or "email"), each with why:
        checked as the API checks its bodies (onboards.validation)."""
        # A form's bytes that are not UTF-8 arrive as U+FFFD (starlette decodes them so): refused, not stored.
        return {name: MESSAGES[rule] for name, rule in fields.items()
                if checks(self.schemas[rule], Draft4Validator).errors(form.get(name, "").strip())[0]
                or "\ufffd" in form.get(name, "")}


class Pages:
    """The routes' answers: each page's work runs as a unit of work (handlers.unit_of_work) of its own."""

    def __init__(self, settings: Settings, rules: Rules) -> None:
        self.base_url, self.rules = settings.base_url, rules
        self.secure = settings.base_url.startswith("https://")

    # --- answering ---------------------------------------------------------------------------------------

    def respond(self, request: Request, answer: Answer) -> Response:
        csrf = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(32)
        if answer.redirect:
            response: Response = RedirectResponse(answer.redirect, status_code=303)
        else:
            response = templates.TemplateResponse(request, answer.template, {
                "csrf": csrf, "base_url": self.base_url, **answer.context}, status_code=answer.status)
        response.headers.update(SECURITY_HEADERS)
        if CSRF_COOKIE not in request.cookies:
            self._cookie(response, CSRF_COOKIE, csrf, None)
        for name, value in answer.cookies.items():
            self._cookie(response, name, value, int(SESSION_TTL.total_seconds()) if name == SESSION_COOKIE else None)
        return response

    def _cookie(self, response: Response, name: str, value: str, max_age: int | None) -> None:
        response.set_cookie(name, value, max_age=max_age, path="/", secure=self.secure, httponly=True,
                            samesite="lax")

    def error(self, request: Request, status: int, title: str, message: str) -> Response:
        return self.respond(request, Answer("error.html", {"title": title, "message": message}, status))

    def page(self, run: Callable[..., Awaitable[Answer]], *, post: bool = False,
             ) -> Callable[[Request], Awaitable[Response]]:
        """A route: `run(request, form)` answers; a POST without the browser's CSRF token is a 403; a
        refusal by the models is a page saying so with its status, never a 500."""

        async def route(request: Request) -> Response:
            form: dict[str, str] = {}
            if post:
                async with request.form(max_files=0, max_fields=20) as data:
                    form = {k: v for k, v in data.items() if isinstance(v, str)}
                cookie, given = request.cookies.get(CSRF_COOKIE, ""), form.get("csrf", "")
                if not cookie or not hmac.compare_digest(cookie.encode(), given.encode()):
                    return self.error(request, 403, "This form has expired",
                                      "The form was not sent from this site's page. Go back, reload the page and "
                                      "send it again.")
            try:
                return self.respond(request, await run(request, form))
            except Refused as refused:  # a limit reached (429) or the request's deadline passed (503)
                status, said = answer_for(refused)[0], str(refused)
                response = self.error(request, status, "Too many attempts" if status == 429 else "Try again shortly",
                                      f"{said[:1].upper()}{said[1:]}.")
                response.headers.update(refusal_headers(request.scope, refused))
                return response
            except LinkGone as gone:
                return self.error(request, 410, f"This invitation link was {gone.why}" if gone.why != "expired"
                                  else "This invitation has expired", GONE[gone.why])
            except NotFound:
                return self.respond(request, Answer("error.html", NOT_FOUND, 404))
            except DomainError as refused:
                return self.error(request, answer_for(refused)[0], "That did not work", str(refused))

        return route

    # --- pages of the link -------------------------------------------------------------------------------

    async def invitation(self, request: Request, form: dict[str, str], *, problems: dict | None = None,
                         status: int = 200) -> Answer:
        shown = {name: CONTROL_CHARACTERS.sub(" ", value) for name, value in form.items()}  # a page holds none
        return await _invitation(request.path_params["token"], client_of(request),
                                 request.cookies.get(SESSION_COOKIE, ""), shown, problems or {}, status)

    async def create(self, request: Request, form: dict[str, str]) -> Answer:
        problems = self.rules.problems(form, company="name", user_name="name")
        if problems:
            return await self.invitation(request, form, problems=problems, status=422)
        return await _create(request.path_params["token"], form["company"].strip(), form["user_name"].strip(),
                             request.cookies.get(SESSION_COOKIE, ""))

    async def decline_by_link(self, request: Request, _form: dict[str, str]) -> Answer:
        return await _decline_by_link(request.path_params["token"])

    # --- signing in --------------------------------------------------------------------------------------

    async def sign_in(self, request: Request, form: dict[str, str]) -> Answer:
        """GET: the e-mail form. POST: a code e-mailed, and the code's form."""
        after = _local(form.get("next") or request.query_params.get("next", ""))
        email = form.get("email", request.query_params.get("email", "")).strip()
        if request.method == "GET":
            return Answer("sign_in.html", {"email": email, "next": after, "problems": {}})
        problems = self.rules.problems(form, email="email")
        if problems:
            return Answer("sign_in.html", {"email": email, "next": after, "problems": problems}, 422)
        await _send_code(client_of(request), email)
        return Answer("code.html", {"email": email, "next": after, "problems": {}})

    async def code(self, request: Request, form: dict[str, str]) -> Answer:
        email, after = form.get("email", "").strip(), _local(form.get("next", ""))
        code = form.get("code", "").strip()
        problems = self.rules.problems(form, email="email")
        if not (len(code) == 6 and code.isdigit()):
            problems["code"] = "The code has six digits."
        if problems:
            return Answer("code.html", {"email": email, "next": after, "problems": problems}, 422)
        return await _verify(client_of(request), email, code, after, request.cookies.get(SESSION_COOKIE, ""))

    # --- pages of the session ----------------------------------------------------------------------------

    async def signed_in(self, request: Request, form: dict[str, str]) -> Answer:
        """The page of the session's user at this path, or the sign-in page that comes back here."""
        found = await _session_page(request.cookies.get(SESSION_COOKIE, ""), request.url.path,
                                    request.method, dict(request.path_params), form)
        return found or Answer(redirect=f"/onboarding/sign-in?next={quote(request.url.path)}")

    # --- the sandbox mailbox -----------------------------------------------------------------------------

    async def mailbox(self, request: Request, form: dict[str, str]) -> Answer:
        """Sandbox mode: every e-mail of the outbox, behind the sandbox token (a cookie set by a form)."""
        if request.method == "POST":
            given = form.get("token", "")
            if await sandbox.check_token(given, request) is None:
                return Answer("mailbox_token.html", {"problems": {"token": "That is not the sandbox token."}}, 403)
            return Answer(redirect="/sandbox/mail", cookies={SANDBOX_COOKIE: given})
        cookie = request.cookies.get(SANDBOX_COOKIE, "")  # none yet is no failed attempt: only a wrong one counts
        if not cookie or await sandbox.check_token(cookie, request) is None:
            return Answer("mailbox_token.html", {"problems": {}})
        return Answer("mailbox.html", {"messages": await _mail()})


NOT_FOUND = {"title": "Not found", "message": "There is nothing at this address."}
GONE = {
    "expired": "Ask the person who invited you to send the invitation again.",
    "used": "It made an account already. Sign in to go on with that account.",
    "replaced": "A newer invitation e-mail replaced it: use the link of the latest one.",
    "declined": "The invitation was declined. Ask the person who invited you for a new one.",
    "withdrawn": "The person who invited you withdrew the invitation.",
}


def _local(path: str) -> str:
    """Where to go after signing in: one of this site's onboarding pages, never elsewhere."""
    return path if path.startswith("/onboarding/") and "//" not in path and "\\" not in path else ""


def _invitation_context(invitation: Invitation) -> dict[str, Any]:
    return {"invitation": invitation, "inviter": invitation.account.name, "role": KIND_ROLE[invitation.kind],
            "expires_at": rfc3339(invitation.expires_at)}


@unit_of_work()
def _invitation(token: str, client: str, session: str, form: dict[str, str], problems: dict,
                status: int) -> Answer:
    refuse_if_throttled(client)
    try:
        _link, invitation = JoinToken.find(token)
    except NotFound:
        count_failure(client)  # answered, not raised: the count is committed with this unit of work
        return Answer("error.html", NOT_FOUND, 404)
    current = JoinSession.of(session) if session else None
    user = User.get_or_none(User.email == invitation.email)
    mine = current is not None and user is not None and current.user_id == user.id
    return Answer("invitation.html", {**_invitation_context(invitation), "token": token, "mine": mine,
                                      "has_account": user is not None, "form": form, "problems": problems}, status)


@unit_of_work()
def _create(token: str, company: str, user_name: str, session: str) -> Answer:
    try:
        user, invitation = create_account(token, company, user_name)
    except LinkGone as gone:
        # A second submission (two tabs, the back button): the account it made is this browser's.
        current = JoinSession.of(session) if session else None
        invitation_id = JoinToken.get(JoinToken.digest == digest_of(token)).invitation_id
        made = Invitation.get_or_none(Invitation.id == invitation_id)
        if gone.why == "used" and current and made and User.get_by_id(current.user_id).email == made.email:
            return Answer(redirect=f"/onboarding/invitations/{made.id}")
        raise
    fresh = JoinSession.start(user, key_due=True, replacing=session or None)
    return Answer(redirect=f"/onboarding/invitations/{invitation.id}", cookies={SESSION_COOKIE: fresh})


@unit_of_work()
def _decline_by_link(token: str) -> Answer:
    _link, invitation = JoinToken.find(token)
    invitation.end("declined")
    return Answer("declined.html", {"inviter": invitation.account.name})


@unit_of_work()
def _send_code(client: str, email: str) -> None:
    count_failure(client)  # every code e-mailed counts: sending them is what an attacker would repeat
    SignInCode.send(email)


@unit_of_work()
def _verify(client: str, email: str, code: str, after: str, session: str) -> Answer:
    refuse_if_throttled(client)
    user = SignInCode.verify(email, code)
    if user is None:
        return Answer("code.html", {"email": email, "next": after, "problems": {
            "code": "That code is wrong or no longer valid: try again, or ask for a new one."}, "failed": True}, 422)
    fresh = JoinSession.start(user, replacing=session or None)
    return Answer(redirect=after or "/onboarding/", cookies={SESSION_COOKIE: fresh})


@unit_of_work()
def _session_page(session: str, path: str, method: str, params: dict[str, str], form: dict[str, str]
                  ) -> Answer | None:
    current = JoinSession.of(session) if session else None
    if current is None:
        return None
    user: User = User.get_by_id(current.user_id)
    account_id = user.account_id
    if path == "/onboarding/":
        return Answer("home.html", {"user": user, "onboards": list(Onboard.for_account(account_id).order_by(
            Onboard.id.desc()).limit(20)), "key_due": current.key_due})
    if path == "/onboarding/key":
        shown = {"key_due": current.key_due, "key": None, "email": user.email}
        return Answer("key.html", shown if method == "GET" else {**shown, "key_due": False, "key": current.take_key()})
    if path.startswith("/onboarding/invitations/"):
        return _accept_page(current, account_id, params["id"], method, path)
    return _onboard_page(current, account_id, params["id"], method, path, form)


def _accept_page(current: JoinSession, account_id: str, invitation_id: str, method: str, path: str) -> Answer:
    invitation = Invitation.get_visible(account_id, invitation_id)
    if method == "POST" and path.endswith("/accept"):
        if invitation.kind == "recipient":  # the buyer: POST /onboards's model code accepts and makes the onboard
            onboard, _created = Onboard.create_from_invitation(account_id, invitation.id, None)
            return Answer(redirect=f"/onboarding/onboards/{onboard.id}")
        invitation.accept(account_id)
        return Answer(redirect=f"/onboarding/invitations/{invitation.id}")
    if method == "POST":
        invitation.decline(account_id)
        return Answer("declined.html", {"inviter": invitation.account.name})
    onboard = Onboard.select().where(Onboard.invitation == invitation.id, Onboard.account == account_id).first()
    if onboard is not None:  # accepted already (another tab, the back button): the state as it is
        return Answer(redirect=f"/onboarding/onboards/{onboard.id}")
    return Answer("accept.html", {**_invitation_context(invitation), "accepted": invitation.accepted_at is not None,
                                  "key_due": current.key_due})


def _onboard_page(current: JoinSession, account_id: str, onboard_id: str, method: str, path: str,
                  form: dict[str, str]) -> Answer:
    onboard = Onboard.get_for_account(account_id, onboard_id)
    flows = list(Flow.for_account(account_id).order_by(Flow.id).limit(100))
    if method == "POST" and onboard.status not in ("completed", "completed_flows_sync"):
        if path.endswith("/flow"):
            chosen = form.get("flow_id", "")
            if chosen != "new" and chosen not in {f.id for f in flows}:
                return Answer("onboard.html", {**_onboard_context(onboard, flows, current), "problems": {
                    "flow_id": "Pick one of your flows, or a new minimal flow."}}, 422)
            changes = {"status": "in_progress", "flow_id": None if chosen == "new" else chosen}
        else:
            changes = {"status": "completed"}
        if onboard.status != changes["status"] or changes.get("flow_id", onboard.flow_id) != onboard.flow_id:
            onboard.update_from(changes)
        return Answer(redirect=f"/onboarding/onboards/{onboard.id}")
    if method == "POST":  # finished already: the state as it is
        return Answer(redirect=f"/onboarding/onboards/{onboard.id}")
    return Answer("onboard.html", {**_onboard_context(onboard, flows, current), "problems": {}})


def _onboard_context(onboard: Onboard, flows: list[Flow], current: JoinSession) -> dict[str, Any]:
    connection = Connection.get_by_id(onboard.connection_id)
    flow = Flow.get_or_none(Flow.id == onboard.flow_id) if onboard.flow_id else None
    source = next((s for s in flow.sources if s["entity"]["id"] == connection.seller_entity_id), None) if flow else None
    return {"onboard": onboard, "flows": flows, "connection": connection, "flow": flow, "source": source,
            "seller": connection.seller.name if connection.seller else "", "key_due": current.key_due}


@unit_of_work(write=False)
def _mail() -> list[dict[str, Any]]:
    return [{"message": m, "created_at": rfc3339(m.created_at)}
            for m in OutboxMessage.select().order_by(OutboxMessage.id.desc()).limit(200)]


async def _style(_request: Request) -> Response:
    return FileResponse(STYLE, media_type="text/css", headers={"Cache-Control": "max-age=3600"})


def install(app: AsyncApp, settings: Settings, spec: dict) -> None:
    """The join pages (and, in sandbox mode, the mailbox page) routed beside the API; the invitation
    e-mails' links start with settings.base_url."""
    pages = Pages(settings, Rules(spec))
    routes: list[tuple[str, Callable[[Request], Awaitable[Response]], list[str]]] = [
        ("/onboarding/onboards.css", _style, ["GET"]),
        ("/join/{token}", pages.page(pages.invitation), ["GET"]),
        ("/join/{token}/account", pages.page(pages.create, post=True), ["POST"]),
        ("/join/{token}/decline", pages.page(pages.decline_by_link, post=True), ["POST"]),
        ("/onboarding/sign-in", pages.page(pages.sign_in), ["GET"]),
        ("/onboarding/sign-in", pages.page(pages.sign_in, post=True), ["POST"]),
        ("/onboarding/code", pages.page(pages.code, post=True), ["POST"]),
        ("/onboarding/", pages.page(pages.signed_in), ["GET"]),
        ("/onboarding/key", pages.page(pages.signed_in), ["GET"]),
        ("/onboarding/key", pages.page(pages.signed_in, post=True), ["POST"]),
        ("/onboarding/invitations/{id}", pages.page(pages.signed_in), ["GET"]),
        ("/onboarding/invitations/{id}/accept", pages.page(pages.signed_in, post=True), ["POST"]),
        ("/onboarding/invitations/{id}/decline", pages.page(pages.signed_in, post=True), ["POST"]),
        ("/onboarding/onboards/{id}", pages.page(pages.signed_in), ["GET"]),
        ("/onboarding/onboards/{id}/flow", pages.page(pages.signed_in, post=True), ["POST"]),
        ("/onboarding/onboards/{id}/finish", pages.page(pages.signed_in, post=True), ["POST"]),
    ]
    if settings.sandbox:
        routes += [("/sandbox/mail", pages.page(pages.mailbox), ["GET"]),
                   ("/sandbox/mail", pages.page(pages.mailbox, post=True), ["POST"])]
    for number, (path, endpoint, methods) in enumerate(routes):
        app.add_url_rule(path, f"join_{number}", endpoint, methods=methods)
