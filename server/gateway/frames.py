"""The WebSocket protocol's frames (v1): typed, validated, encoded once. No I/O here.

Every frame is a JSON object with a ``type``. A client request carries an ``id`` (its correlation
id) and is answered by exactly one ``result`` or ``error`` frame with the same ``id``. Pushes from
the server (``hello``, ``event``, ``read``, ``delivered``, ``typing``, ``hidden``, ``presence``,
``resync``, ``reconnect``) carry no ``id``.
``docs/protocol.md`` documents every frame; this module is the source of truth it follows.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Callable, Literal, Union

import msgspec

from ..errors import XtError
from ..messaging.models import (MAX_FORWARD_ITEMS, MAX_MENTIONS, MAX_TEXT, Card, ClientMsgId, Event, FileRef, Message,
                                ReplyRef)

MAX_FRAME_BYTES = 64 * 1024  # inbound; larger frames close the socket with 1009

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
ConversationId = Annotated[str, msgspec.Meta(min_length=1, max_length=40)]
Seq = Annotated[int, msgspec.Meta(ge=1, le=2**53)]
SeqOrZero = Annotated[int, msgspec.Meta(ge=0, le=2**53)]
Text = Annotated[str, msgspec.Meta(max_length=MAX_TEXT)]
UserIdIn = Annotated[str, msgspec.Meta(min_length=1, max_length=40)]


class MessageInput(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """What a client sends as a message (``message`` of ``send``)."""

    kind: Literal["text", "card", "file", "image"]
    text: Text | None = None
    mentions: Annotated[list[UserIdIn], msgspec.Meta(max_length=MAX_MENTIONS)] = []
    mention_all: bool = False
    reply_to: ReplyRef | None = None
    card: Card | None = None
    file: FileRef | None = None
    urgent: bool = False

    def to_message(self) -> Message:
        return Message(kind=self.kind, text=self.text, mentions=list(self.mentions), mention_all=self.mention_all,
                       reply_to=self.reply_to, card=self.card, file=self.file, urgent=self.urgent)


class Request(msgspec.Struct, tag_field="type", forbid_unknown_fields=True, kw_only=True):
    """A client request: a ``type`` tag and the ``id`` its answer carries. The signaling protocol's
    requests derive from it too, and share ``auth`` and ``ping``."""

    id: Id


class Auth(Request, tag="auth"):
    token: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]


class Ping(Request, tag="ping"):
    pass


class Sync(Request, tag="sync"):
    since: Annotated[dict[ConversationId, SeqOrZero], msgspec.Meta(max_length=5000)] = {}
    limit: Annotated[int, msgspec.Meta(ge=1, le=500)] = 100


class History(Request, tag="history"):
    conversation_id: ConversationId
    before: Seq | None = None
    after: SeqOrZero | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=200)] = 50


class Send(Request, tag="send"):
    conversation_id: ConversationId
    client_msg_id: ClientMsgId
    message: MessageInput


class ForwardRequest(Request, tag="forward"):
    conversation_id: ConversationId
    client_msg_id: ClientMsgId
    source_conversation_id: ConversationId
    seqs: Annotated[list[Seq], msgspec.Meta(min_length=1, max_length=MAX_FORWARD_ITEMS)]
    mode: Literal["single", "merged"] = "merged"
    title: Annotated[str, msgspec.Meta(max_length=64)] = ""


class Edit(Request, tag="edit"):
    conversation_id: ConversationId
    seq: Seq
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TEXT)]
    client_msg_id: ClientMsgId | None = None  # makes a retried edit return the first one


class Recall(Request, tag="recall"):
    conversation_id: ConversationId
    seq: Seq


class UpdateCard(Request, tag="update_card"):
    conversation_id: ConversationId
    seq: Seq
    card: Card
    client_msg_id: ClientMsgId


class DeleteForMe(Request, tag="delete_for_me"):
    conversation_id: ConversationId
    seqs: Annotated[list[Seq], msgspec.Meta(min_length=1, max_length=100)]


class Read(Request, tag="read"):
    conversation_id: ConversationId
    seq: Seq


class ReadAll(Request, tag="read_all"):
    pass


class Delivered(Request, tag="delivered"):
    conversation_id: ConversationId
    seq: Seq


class Typing(Request, tag="typing"):
    conversation_id: ConversationId


class Receipts(Request, tag="receipts"):
    conversation_id: ConversationId
    seq: Seq
    which: Literal["read", "unread"] = "read"
    after: UserIdIn | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=200)] = 50


UserIdList = Annotated[list[UserIdIn], msgspec.Meta(min_length=1, max_length=500)]


class Presence(Request, tag="presence"):
    """The device's own state: in the foreground (active) or in the background (away)."""

    state: Literal["active", "away"]


class PresenceWatch(Request, tag="presence_watch"):
    user_ids: UserIdList


class PresenceUnwatch(Request, tag="presence_unwatch"):
    user_ids: UserIdList


class PresenceQuery(Request, tag="presence_query"):
    user_ids: UserIdList


ClientFrame = Union[Auth, Ping, Sync, History, Send, ForwardRequest, Edit, Recall, UpdateCard, DeleteForMe, Read,
                    ReadAll, Delivered, Typing, Receipts, Presence, PresenceWatch, PresenceUnwatch, PresenceQuery]
REQUEST_TYPES = tuple(sorted(t.__struct_config__.tag for t in ClientFrame.__args__))  # type: ignore[attr-defined]

_loose = msgspec.json.Decoder(dict)
_encoder = msgspec.json.Encoder()


class FrameError(Exception):
    """A frame that cannot be served; ``request_id`` is its id when one could be read."""

    def __init__(self, error: XtError, request_id: str | None):
        super().__init__(error.message)
        self.error = error
        self.request_id = request_id


def request_decoder(union: Any) -> Callable[[bytes | str], Any]:
    """A validating decoder for a tagged union of request frames (this gateway's, or the signaling
    service's): a frame that does not decode raises :class:`FrameError` with the frame's id when it
    could be read, and ``request.malformed_json`` or ``request.invalid`` saying what is wrong."""
    decoder = msgspec.json.Decoder(union)
    known = ", ".join(sorted(t.__struct_config__.tag for t in union.__args__))

    def decode(raw: bytes | str) -> Any:
        try:
            return decoder.decode(raw)
        except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError) as exc:
            request_id = None
            try:
                loose = _loose.decode(raw)
            except msgspec.ValidationError:  # valid JSON, but not an object (ValidationError is a DecodeError)
                raise FrameError(XtError("request.invalid", "A frame is a JSON object."), None) from None
            except (msgspec.DecodeError, UnicodeDecodeError):
                raise FrameError(XtError("request.malformed_json", str(exc)), None) from None
            candidate = loose.get("id")
            if isinstance(candidate, str) and 0 < len(candidate) <= 64:
                request_id = candidate
            message = str(exc)
            if "Invalid value" in message and "`$.type`" in message or "missing required field `type`" in message:
                raise FrameError(XtError("request.invalid", f"unknown or missing frame type (known: {known})"),
                                 request_id) from None
            raise FrameError(XtError("request.invalid", message), request_id) from None

    return decode


decode_request = request_decoder(ClientFrame)


# ---- outbound ----------------------------------------------------------------------------------------

def encode(payload: Any) -> bytes:
    return _encoder.encode(payload)


def result_frame(request_id: str, result: Any) -> bytes:
    return _encoder.encode({"type": "result", "id": request_id, "result": result})


def error_frame(request_id: str | None, error: XtError) -> bytes:
    return _encoder.encode({"type": "error", "id": request_id, **error.to_body()})


def event_frame(event: Event) -> bytes:
    """The one encoding of an event that every recipient receives."""
    return _encoder.encode({"type": "event", "event": event})


def read_frame(conversation_id: str, user_id: str, read_seq: int, *, unread: int | None = None,
               mention_unread: int | None = None) -> bytes:
    frame: dict[str, Any] = {"type": "read", "conversation_id": conversation_id, "user_id": user_id,
                             "read_seq": read_seq}
    if unread is not None:
        frame["unread"] = unread
        frame["mention_unread"] = mention_unread or 0
    return _encoder.encode(frame)


def delivered_frame(conversation_id: str, user_id: str, delivered_seq: int) -> bytes:
    return _encoder.encode({"type": "delivered", "conversation_id": conversation_id, "user_id": user_id,
                            "delivered_seq": delivered_seq})


def hidden_frame(conversation_id: str, seqs: list[int]) -> bytes:
    return _encoder.encode({"type": "hidden", "conversation_id": conversation_id, "seqs": seqs})


def typing_frame(conversation_id: str, user_id: str) -> bytes:
    return _encoder.encode({"type": "typing", "conversation_id": conversation_id, "user_id": user_id})


def hello_frame(user_id: str, device_id: str, heartbeat: float, server_time: datetime,
                limits: dict[str, Any]) -> bytes:
    return _encoder.encode({"type": "hello", "protocol": 1, "user_id": user_id, "device_id": device_id,
                            "heartbeat_seconds": heartbeat, "server_time": server_time, "limits": limits})


def presence_frame(user_id: str, state: str, last_seen: datetime | None) -> bytes:
    return _encoder.encode({"type": "presence", "user_id": user_id, "state": state, "last_seen": last_seen})


def resync_frame() -> bytes:
    return _encoder.encode({"type": "resync"})


def reconnect_frame(reason: str) -> bytes:
    return _encoder.encode({"type": "reconnect", "reason": reason})


__all__ = ["FileRef"]
