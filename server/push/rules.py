"""Who gets a push for what, and what it says — pure functions, no I/O (docs/flows/push.md).

Rules, in order, for an event and one recipient:

1. Never to the sender, never for system events (joins, renames…).
2. Not while the recipient is **in the app**: any of their connections is in the foreground
   (presence ``online``). A device connected in the background still gets the push.
3. A **muted** conversation stays silent — unless the recipient is @mentioned (or @all), or the
   message is urgent. Incoming calls ring through a mute (it is for chatter, not for calls).
4. **Do-not-disturb** hours (in the user's time zone, Asia/Shanghai by default) hold everything but
   urgent messages.
5. **Privacy** by default: the notification names the sender and the conversation, not the text;
   an organisation that allows it (``XT_PUSH_PREVIEWS``) shows a preview.
6. One notification per conversation: the conversation id is the notification's tag (Android,
   web) and collapse id (iOS), so a new message replaces the previous one in the tray. Badge = the
   user's total unread count. Calls are high-priority data pushes that expire in 30 s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, time, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..messaging.models import Conversation, Event
from ..messaging.writer import preview
from ..models import NotificationSettings

MESSAGE_TTL_SECONDS = 24 * 3600  # a chat notification older than a day is noise
CALL_TTL_SECONDS = 30  # a call that rang out is not worth ringing


@dataclass(frozen=True)
class Notification:
    """What a device is sent (provider-neutral)."""

    kind: str  # "message" | "call"
    title: str
    body: str
    tag: str  # collapse key: one notification per conversation
    priority: str  # "normal" | "high"
    ttl_seconds: int
    data: dict[str, str] = field(default_factory=dict)
    badge: int | None = None


@dataclass(frozen=True)
class Recipient:
    user_id: str
    muted: bool
    settings: NotificationSettings
    in_foreground: bool


def mentioned(event: Event, user_id: str) -> bool:
    message = event.message
    return message is not None and (message.mention_all or user_id in message.mentions)


def urgent(event: Event) -> bool:
    return event.message is not None and event.message.urgent


def parse_hhmm(value: str) -> time:
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))


def in_do_not_disturb(settings: NotificationSettings, now: datetime) -> bool:
    if not settings.dnd_start or not settings.dnd_end:
        return False
    try:
        zone = ZoneInfo(settings.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("Asia/Shanghai")
    local = now.astimezone(zone).time().replace(second=0, microsecond=0)
    start, end = parse_hhmm(settings.dnd_start), parse_hhmm(settings.dnd_end)
    if start <= end:
        return start <= local < end
    return local >= start or local < end  # crosses midnight: 22:00–07:00


def why_not(event: Event, recipient: Recipient, now: datetime, *, call: bool = False) -> str | None:
    """None if ``recipient`` gets a push for ``event``; else the rule that holds it back."""
    if event.sender_id == recipient.user_id:
        return "sender"
    if not call and event.type != "message":
        return "not_a_message"
    if recipient.in_foreground:
        return "in_foreground"
    if recipient.muted and not (call or mentioned(event, recipient.user_id) or urgent(event)):
        return "muted"
    if in_do_not_disturb(recipient.settings, now) and not urgent(event):
        return "do_not_disturb"
    return None


def compose(event: Event, conversation: Conversation, sender_name: str, recipient_id: str, *,
            previews: bool, badge: int | None) -> Notification:
    """The notification of a message for one recipient."""
    group = conversation.kind != "direct"
    title = (conversation.name or "群聊") if group else sender_name
    if mentioned(event, recipient_id):
        body = f"{sender_name}在群里@了你" if group else f"{sender_name}@了你"
    elif previews and event.message is not None:
        text = preview(event.message)
        body = f"{sender_name}: {text}" if group else text
    else:
        body = f"{sender_name}发来一条消息" if group else "发来一条消息"
    if urgent(event):
        body = "[紧急] " + body
    return Notification(kind="message", title=title, body=body, tag=conversation.id,
                        priority="high" if mentioned(event, recipient_id) or urgent(event) else "normal",
                        ttl_seconds=MESSAGE_TTL_SECONDS, badge=badge,
                        data={"type": "message", "conversation_id": conversation.id, "seq": str(event.seq),
                              "event_id": event.id})


def compose_call(call_id: str, conversation_id: str, caller_name: str, media: str) -> Notification:
    """An incoming call: a high-priority data push that the app turns into a ringing screen."""
    return Notification(kind="call", title=caller_name, body="视频通话" if media == "video" else "语音通话",
                        tag=f"call:{call_id}", priority="high", ttl_seconds=CALL_TTL_SECONDS,
                        data={"type": "call", "call_id": call_id, "conversation_id": conversation_id,
                              "caller": caller_name, "media": media})


def utc(now: datetime | None = None) -> datetime:
    return now or datetime.now(timezone.utc)
