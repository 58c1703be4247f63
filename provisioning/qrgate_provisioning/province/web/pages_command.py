"""The command pages (operator role only): /commands to pick a gate, /gates/{device_id}/command to send it one.

The form offers the six commands (``set_log_level`` with its level, ``restart`` only with its confirmation box
ticked, since a restarting gate lets nobody through for a while). POST signs the command with the service's
operator key (``[commands] key_file``), named after the logged-in person, and sends it with
``command_sender.send_command_audited``: the audit log gets who, when, which gate, what and from where before it
is sent, and the gate's answer after. The page shows the outcome, the gate's sentence and what it returned.

The key is read at each command, so a key that was replaced or made readable by others is noticed at once. The
sender connects with the service's broker section (or ``[commands] broker_cert_file``, see settings) under a
client id of its own (``CommandSender``). Commands go out one at a time per dashboard: two at once with the same
certificate on the provincial broker, which makes the certificate's CN the client id, would knock each other
off.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, cast, get_args

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import RedirectResponse, Response

from qrgate.remote.dispatch import LOG_LEVELS
from qrgate.wire import CommandName

from ...errors import ProvinceError
from ..accounts import Session
from ..registry import id_problem
from .auth import check_csrf, context_of, remote_of, require
from .fleet_rows import fleet_row, unheard_row

if TYPE_CHECKING:
    from qrgate.wire import CommandResponse

    from ..settings import BrokerSettings, ProvinceConfig
    from .context import ProvinceContext
    from .fleet_rows import FleetRow
    from .i18n import Language
    from .render import Renderer

log = logging.getLogger(__name__)

COMMAND_NAMES: tuple[str, ...] = get_args(CommandName)
RESTART_CONFIRMED = "yes"
LOCK_MARGIN_S = 35.0  # beyond the gate's timeout: the broker's CONNACK, SUBACK and PUBACK (10 s each at most)


def command_broker(config: ProvinceConfig) -> BrokerSettings:
    """The broker section the sender connects with: the service's, with the command certificate when one is set."""
    commands = config.commands
    if commands.broker_cert_file is None:
        return config.broker
    return config.broker.model_copy(update={"cert_file": commands.broker_cert_file,
                                            "key_file": commands.broker_key_file})


def gate_row(context: ProvinceContext, device_id: str, t: Mapping[str, str], language: Language,
             now: float) -> FleetRow | None:
    """The gate as the fleet table shows it, or None when neither the registry nor the fleet knows it."""
    if id_problem(device_id) is not None:
        return None
    gate, view = context.registry.gate(device_id), context.fleet.view(device_id)
    place_id = gate.place_id if gate is not None else (view.site_id or "") if view is not None else ""
    place = context.registry.place(place_id) if place_id else None
    if view is not None:
        return fleet_row(view, place, gate, t, language, context.zone, context.config.alerts, now)
    return unheard_row(gate, place, t) if gate is not None else None


def answer_values(response: CommandResponse, zone: dt.tzinfo) -> dict[str, object]:
    """The gate's answer as the page shows it."""
    try:
        answered = dt.datetime.fromisoformat(response.time).astimezone(zone).strftime("%d/%m/%Y %H:%M:%S")
    except ValueError:  # a gate's clock text we cannot read is shown as it came
        answered = response.time
    return {"outcome": response.outcome, "detail": response.detail, "answered_at": answered,
            "result": json.dumps(response.result, indent=2, ensure_ascii=False, sort_keys=True)
            if response.result else ""}


def command_router(renderer: Renderer) -> APIRouter:
    router = APIRouter()
    sending = threading.Lock()  # one command at a time (the module's docstring says why)

    def gate_page(request: Request, device_id: str, *, form: dict[str, str] | None = None, error: str = "",
                  answer: dict[str, object] | None = None, no_answer: str = "", status: int = 200) -> Response:
        context = context_of(request)
        t = renderer.labels(request)
        row = gate_row(context, device_id, t, renderer.language(request), time.time())
        if row is None:
            return renderer.page(request, "error.html", {"message": t["command_unknown_gate"]}, status=404)
        commands = context.config.commands
        return renderer.page(request, "command.html", {
            "device_id": device_id, "row": row, "configured": commands.key_file is not None,
            "names": COMMAND_NAMES, "levels": LOG_LEVELS, "lifetime": f"{commands.lifetime_s:g}",
            "kid": _kid_of(context), "form": form or {"command": "status", "level": "INFO"}, "error": error,
            "answer": answer, "no_answer": no_answer,
        }, status=status)

    @router.get("/commands")
    def pick_gate(request: Request, session: Annotated[Session, Depends(require("operator"))],
                  device_id: Annotated[str, Query(max_length=200)] = "") -> Response:
        device_id = device_id.strip()
        if device_id and id_problem(device_id) is None:
            return RedirectResponse(f"/gates/{device_id}/command", status_code=303)
        t = renderer.labels(request)
        error = t["command_unknown_gate"] if device_id else ""
        return renderer.page(request, "command.html", {"device_id": "", "device_asked": device_id, "error": error},
                             status=404 if device_id else 200)

    @router.get("/gates/{device_id}/command")
    def command_form(request: Request, device_id: str,
                     session: Annotated[Session, Depends(require("operator"))]) -> Response:
        return gate_page(request, device_id)

    @router.post("/gates/{device_id}/command", dependencies=[Depends(check_csrf)])
    def command_post(request: Request, device_id: str, session: Annotated[Session, Depends(require("operator"))],
                     command: Annotated[str, Form(max_length=32)] = "",
                     level: Annotated[str, Form(max_length=16)] = "",
                     confirm: Annotated[str, Form(max_length=8)] = "") -> Response:
        import psycopg

        from ..command_sender import send_command_audited
        from ..command_signing import load_operator_key, new_command

        context = context_of(request)
        t = renderer.labels(request)
        form = {"command": command, "level": level or "INFO"}
        settings = context.config.commands
        if gate_row(context, device_id, t, renderer.language(request), 0.0) is None:
            return gate_page(request, device_id)  # the "no such gate" page
        if settings.key_file is None:
            return gate_page(request, device_id, form=form, status=503)  # the page says commands are not set up
        problem = _form_problem(command, level, confirm)
        if problem:
            return gate_page(request, device_id, form=form, error=t[problem], status=400)
        try:
            key = load_operator_key(settings.key_file)
        except ProvinceError as exc:
            log.warning("the dashboard's operator key cannot be used: %s", exc)
            return gate_page(request, device_id, form=form, status=503,
                             error=t["command_key_unusable"].format(detail=exc))
        args = {"level": level} if command == "set_log_level" else {}
        if not sending.acquire(timeout=settings.timeout_s + LOCK_MARGIN_S):
            return gate_page(request, device_id, form=form, error=t["command_busy"], status=503)
        try:
            signed_for = new_command(cast("CommandName", command), device_id, session.user.name, args=args,
                                     lifetime_s=settings.lifetime_s)
            response = send_command_audited(command_broker(context.config), key, signed_for, context.accounts,
                                            detail={"via": "dashboard"}, remote=remote_of(request),
                                            timeout_s=settings.timeout_s)
        except ProvinceError as exc:  # no answer: offline, not subscribed, or the broker refused (audited so)
            log.warning("%s's command %s to %s got no answer: %s", session.user.name, command, device_id, exc)
            return gate_page(request, device_id, form=form, no_answer=str(exc), status=504)
        except psycopg.Error as exc:
            log.error("a command to %s: the audit log cannot be written: %s", device_id, exc)
            return gate_page(request, device_id, form=form, status=503,
                             error=t["command_audit_failed"].format(detail=type(exc).__name__))
        finally:
            sending.release()
        log.info("%s sent %s to %s from the dashboard: %s", session.user.name, command, device_id,
                 response.outcome)
        return gate_page(request, device_id, form=form, answer=answer_values(response, context.zone))

    return router


def _form_problem(command: str, level: str, confirm: str) -> str:
    """The label key of what is wrong with the form, or ""."""
    if command not in COMMAND_NAMES:
        return "command_error_name"
    if command == "set_log_level" and level not in LOG_LEVELS:
        return "command_error_level"
    if command == "restart" and confirm != RESTART_CONFIRMED:
        return "command_error_confirm"
    return ""


def _kid_of(context: ProvinceContext) -> str:
    """The key's id for the page's hint ("" when there is none or it cannot be read: the POST says why)."""
    from ..command_signing import load_operator_key

    key_file = context.config.commands.key_file
    if key_file is None:
        return ""
    try:
        return load_operator_key(key_file).kid
    except ProvinceError:
        return ""
