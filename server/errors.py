"""The one error type of Xietong, and the registry of stable error codes.

Every refusal a client can see is an :class:`XtError` with a code from :data:`CODES`. REST answers
``{"error": {"code": ..., "message": ..., "details": ...}}`` with the code's HTTP status; the
WebSocket gateway sends the same object in an ``error`` frame. Codes are stable API: never rename
one, add a new one instead. ``docs/errors.md`` lists them and a test keeps it complete.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ErrorSpec:
    status: int
    meaning: str


CODES: dict[str, ErrorSpec] = {
    # Malformed or refused requests.
    "request.malformed_json": ErrorSpec(400, "The body or frame is not valid JSON."),
    "request.invalid": ErrorSpec(400, "A field is missing, of the wrong type, out of range, or unknown."),
    "request.too_large": ErrorSpec(413, "The body or frame is larger than the limit."),
    "request.unsupported_media_type": ErrorSpec(415, "The body is not application/json."),
    "request.origin_forbidden": ErrorSpec(403, "The browser Origin is not on the allow-list."),
    "request.not_found": ErrorSpec(404, "No such endpoint."),
    "request.method_not_allowed": ErrorSpec(405, "The endpoint does not accept this method."),
    "request.rate_limited": ErrorSpec(429, "Too many requests; retry after `details.retry_after` seconds."),
    # Authentication.
    "auth.required": ErrorSpec(401, "No access token was given (Authorization: Bearer ...)."),
    "auth.token_invalid": ErrorSpec(401, "The access token is malformed, forged, or for another audience/issuer."),
    "auth.token_expired": ErrorSpec(401, "The access token has expired; refresh it."),
    "auth.session_revoked": ErrorSpec(401, "This device was signed out; log in again."),
    "auth.invalid_credentials": ErrorSpec(401, "Wrong user name or password."),
    "auth.locked": ErrorSpec(429, "Too many failed logins; retry after `details.retry_after` seconds."),
    "auth.account_disabled": ErrorSpec(403, "The account is disabled."),
    "auth.totp_required": ErrorSpec(401, "This account needs a TOTP code (`totp_code`)."),
    "auth.totp_invalid": ErrorSpec(401, "The TOTP code is wrong, expired or already used."),
    "auth.totp_enrollment_required": ErrorSpec(
        403, "The user's unit requires TOTP and the user has none; enroll with `details.enrollment_token`."),
    "auth.totp_already_enabled": ErrorSpec(409, "TOTP is already enabled for this account."),
    "auth.totp_not_enabled": ErrorSpec(409, "TOTP is not enabled for this account."),
    "auth.refresh_invalid": ErrorSpec(401, "The refresh token is unknown or expired."),
    "auth.refresh_reused": ErrorSpec(
        401, "A refresh token was used twice; the device was signed out as a precaution."),
    "auth.password_weak": ErrorSpec(400, "The new password does not meet the password rules."),
    # Authorisation.
    "perm.forbidden": ErrorSpec(403, "The caller may not do this."),
    "perm.out_of_scope": ErrorSpec(403, "The target is outside the part of the organisation the caller administers."),
    # Resources.
    "not_found": ErrorSpec(404, "No such object, or the caller may not see it."),
    "conflict.exists": ErrorSpec(409, "An object with this unique value already exists."),
    "conflict.state": ErrorSpec(409, "The object is not in a state that allows this."),
    "unit.invalid_parent": ErrorSpec(400, "The parent unit cannot hold a unit of this level."),
    "unit.not_empty": ErrorSpec(409, "The unit still has active sub-units or members."),
    "user.last_membership": ErrorSpec(409, "A user must belong to at least one unit."),
    # Conversations and messages.
    "conversation.muted_all": ErrorSpec(403, "Only the owner and admins may speak while mute-all is on."),
    "conversation.dissolved": ErrorSpec(409, "The conversation was dissolved; nothing more can be sent."),
    "conversation.full": ErrorSpec(409, "The group has reached its member limit."),
    "conversation.owner_must_transfer": ErrorSpec(409, "The owner must transfer ownership before leaving."),
    "conversation.contact_forbidden": ErrorSpec(
        403, "The directory's visibility rules do not allow contacting this user."),
    "message.edit_window_passed": ErrorSpec(409, "The time to edit this message has passed."),
    "message.recall_window_passed": ErrorSpec(409, "The time to recall this message has passed (2 minutes)."),
    "message.not_editable": ErrorSpec(409, "This event cannot be edited, recalled or updated (wrong kind, or recalled)."),
    "message.client_id_reused": ErrorSpec(
        409, "This client_msg_id was already used for something else (another conversation or kind of change)."),
    "message.seq_out_of_range": ErrorSpec(400, "The seq is beyond the conversation's last event."),
    "receipts.group_too_large": ErrorSpec(409, "Read receipts are not kept for groups this large."),
    # Calls and meetings (signaling service).
    "call.busy": ErrorSpec(409, "The callee is already in a call (the call ends as busy)."),
    "call.not_participant": ErrorSpec(403, "The caller is not a party to this call, or not the party that may do this."),
    "meeting.locked": ErrorSpec(403, "The meeting is locked: nobody new may join."),
    "meeting.not_invited": ErrorSpec(403, "The caller is not invited to this meeting."),
    "meeting.full": ErrorSpec(409, "The meeting has reached its participant cap."),
    "meeting.ended": ErrorSpec(409, "The meeting has ended."),
    "meeting.not_participant": ErrorSpec(403, "The caller has not joined this meeting (or is still in the waiting room)."),
    "meeting.muted_by_host": ErrorSpec(403, "The host muted everyone and does not allow unmuting; raise a hand instead."),
    "meeting.wrong_topology": ErrorSpec(409, "This request is for the other media path (mesh or SFU) than the meeting uses."),
    "meeting.bad_sdp": ErrorSpec(400, "The SDP offer/answer or ICE candidate is malformed or cannot be negotiated."),
    "meeting.sfu_unavailable": ErrorSpec(503, "No media server (SFU) answers, or it lost the meeting's room; retry."),
    "meeting.sfu_failed": ErrorSpec(502, "The media server (SFU) refused the request (`details.janus_code`)."),
    "signal.not_a_peer": ErrorSpec(403, "The target is not a peer of the caller in this call or meeting."),
    # Server side.
    "server.unavailable": ErrorSpec(503, "A backing service (database, Redis) is unreachable; retry."),
    "server.internal": ErrorSpec(500, "Unexpected server error (logged with `details.incident`)."),
}


class XtError(Exception):
    """A refusal with a stable code. ``details`` carries machine-readable extras (never secrets)."""

    def __init__(self, code: str, message: str | None = None, *, details: dict[str, Any] | None = None):
        spec = CODES.get(code)
        if spec is None:  # a programming error: every code must be registered
            raise KeyError(f"unregistered error code {code!r}")
        self.code = code
        self.status = spec.status
        self.message = message or spec.meaning
        self.details = details or {}
        super().__init__(f"{code}: {self.message}")

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return {"error": body}
