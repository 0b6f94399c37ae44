"""The signaling protocol's frames (v1): typed and validated, as the messaging gateway's are.

Every frame is a JSON object with a ``type``. A request carries an ``id`` and is answered by one
``result`` (``{"type": "result", "id", "result"}``) or ``error`` frame with the same ``id``. Frames
from the service without an ``id`` tell of things that happened (``call.incoming``,
``meeting.participant_joined``, ``signal`` …). ``docs/meetings.md`` documents every frame.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal, Union

import msgspec

from xietong.server.errors import XtError
from xietong.server.gateway.frames import Auth, FrameError, Ping, encode, error_frame, request_decoder, result_frame
from xietong.server.gateway.frames import Request as _Request

__all__ = ["FrameError", "encode", "error_frame", "result_frame", "decode", "check_sdp", "MAX_FRAME_BYTES"]

MAX_FRAME_BYTES = 64 * 1024
MAX_SDP_BYTES = 32 * 1024

Ref = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Title = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


class SessionDescription(msgspec.Struct, forbid_unknown_fields=True):
    type: Literal["offer", "answer"]
    sdp: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_SDP_BYTES)]


class Candidate(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    candidate: Annotated[str, msgspec.Meta(max_length=512)]
    sdpMid: Annotated[str, msgspec.Meta(max_length=32)] | None = None
    sdpMLineIndex: Annotated[int, msgspec.Meta(ge=0, le=64)] | None = None


class TurnCredentials(_Request, tag="turn.credentials"):
    pass


class CallInvite(_Request, tag="call.invite"):
    callee: Ref
    media: Literal["audio", "video"] = "video"


class CallAction(_Request, kw_only=True):
    call_id: Ref


class CallAccept(CallAction, tag="call.accept"):
    pass


class CallDecline(CallAction, tag="call.decline"):
    pass


class CallCancel(CallAction, tag="call.cancel"):
    pass


class CallHangup(CallAction, tag="call.hangup"):
    pass


class Signal(_Request, tag="signal"):
    """Relay an SDP description and/or ICE candidate to one peer of the same call or meeting."""
    to: Ref
    call_id: Ref | None = None
    meeting_id: Ref | None = None
    description: SessionDescription | None = None
    candidate: Candidate | None = None
    end_of_candidates: bool = False


class MeetingCreate(_Request, tag="meeting.create"):
    title: Title
    conversation_id: Ref | None = None
    invitees: Annotated[list[Ref], msgspec.Meta(max_length=1000)] = []
    scheduled_at: datetime | None = None
    reminder_minutes: Annotated[int, msgspec.Meta(ge=0, le=7 * 24 * 60)] | None = None
    waiting_room: bool = False
    cap: Annotated[int, msgspec.Meta(ge=2, le=1000)] | None = None
    topology: Literal["auto", "mesh", "sfu"] = "auto"


class MeetingRef(_Request, kw_only=True):
    meeting_id: Ref


class MeetingGet(MeetingRef, tag="meeting.get"):
    pass


class MediaState(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    mic: bool | None = None
    camera: bool | None = None
    hand: bool | None = None
    screen: bool | None = None


class MeetingJoin(MeetingRef, tag="meeting.join"):
    state: MediaState | None = None


class MeetingLeave(MeetingRef, tag="meeting.leave"):
    pass


class MeetingUpdateState(MeetingRef, tag="meeting.update_state"):
    state: MediaState


class ParticipantAction(MeetingRef, kw_only=True):
    participant_id: Ref


class MeetingAdmit(ParticipantAction, tag="meeting.admit"):
    pass


class MeetingMute(ParticipantAction, tag="meeting.mute"):
    pass


class MeetingRemove(ParticipantAction, tag="meeting.remove"):
    pass


class MeetingTransferHost(ParticipantAction, tag="meeting.transfer_host"):
    pass


class MeetingSetRole(ParticipantAction, tag="meeting.set_role"):
    role: Literal["cohost", "participant"]


class MeetingMuteAll(MeetingRef, tag="meeting.mute_all"):
    allow_unmute: bool = False


class MeetingLock(MeetingRef, tag="meeting.lock"):
    locked: bool


class MeetingEnd(MeetingRef, tag="meeting.end"):
    pass


class MeetingRecord(MeetingRef, tag="meeting.record"):
    action: Literal["start", "stop"]


class SfuPublish(MeetingRef, tag="sfu.publish"):
    description: SessionDescription


class SfuSubscribe(MeetingRef, tag="sfu.subscribe"):
    feeds: Annotated[list[Ref], msgspec.Meta(min_length=1, max_length=100)]


class SfuAnswer(MeetingRef, tag="sfu.answer"):
    description: SessionDescription


class SfuTrickle(MeetingRef, tag="sfu.trickle"):
    target: Literal["publisher", "subscriber"]
    candidate: Candidate | None = None  # None: end of candidates


ClientFrame = Union[Auth, Ping, TurnCredentials, CallInvite, CallAccept, CallDecline, CallCancel, CallHangup,
                    Signal, MeetingCreate, MeetingGet, MeetingJoin, MeetingLeave, MeetingUpdateState, MeetingAdmit,
                    MeetingMute, MeetingRemove, MeetingTransferHost, MeetingSetRole, MeetingMuteAll, MeetingLock,
                    MeetingEnd, MeetingRecord, SfuPublish, SfuSubscribe, SfuAnswer, SfuTrickle]
REQUEST_TYPES = tuple(sorted(t.__struct_config__.tag for t in ClientFrame.__args__))  # type: ignore[attr-defined]

decode = request_decoder(ClientFrame)

_SDP_LINE = re.compile(r"^[a-z]=.*$")


def check_sdp(description: SessionDescription) -> None:
    """Refuse an SDP that does not parse: ``v=0`` first, every line ``x=value``, at least one media
    section, each with a port and a protocol, and ICE credentials (session- or media-level)."""
    lines = [line for line in description.sdp.replace("\r\n", "\n").split("\n") if line]
    if not lines or lines[0] != "v=0" or not all(_SDP_LINE.match(line) for line in lines):
        raise XtError("meeting.bad_sdp", "The SDP does not parse (it must start with v=0; lines are x=value).")
    media = [line for line in lines if line.startswith("m=")]
    if not media or any(len(m[2:].split()) < 4 or not m[2:].split()[1].split("/")[0].isdigit() for m in media):
        raise XtError("meeting.bad_sdp", "The SDP has no valid media section (m=<media> <port> <proto> <fmt>).")
    if not any(line.startswith("a=ice-ufrag:") for line in lines):
        raise XtError("meeting.bad_sdp", "The SDP has no ICE credentials (a=ice-ufrag).")


def check_candidate(candidate: Candidate | None) -> None:
    if candidate is not None and candidate.candidate and not candidate.candidate.startswith(("candidate:",
                                                                                            "a=candidate:")):
        raise XtError("request.invalid", "An ICE candidate starts with 'candidate:'.")
