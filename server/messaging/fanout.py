"""Publishing stored events to the bus, each encoded once for all its recipients."""

from __future__ import annotations

from ..bus import Bus, Envelope
from ..gateway.frames import event_frame
from .models import Event

JOINS = {"conversation.created", "member.joined"}
LEAVES = {"member.left", "member.removed"}


def envelopes_for(event: Event) -> list[Envelope]:
    """The conversation's envelope, and for a join one envelope per joined user on their own channel
    (their gateways may not follow the conversation yet; they receive the join event that way)."""
    frame = event_frame(event)
    joined = list(event.data.user_ids) if event.type in JOINS and event.data else []
    left = list(event.data.user_ids) if event.type in LEAVES and event.data else []
    envelopes = [Envelope(kind="conversation", target=event.conversation_id, frame=frame,
                          members_added=joined, members_removed=left)]
    envelopes += [Envelope(kind="user", target=user_id, frame=frame, conversation_id=event.conversation_id)
                  for user_id in joined]
    return envelopes


class Fanout:
    """The event writer's ``on_written``: persist, then publish."""

    def __init__(self, bus: Bus):
        self.bus = bus

    async def events_written(self, events: list[Event]) -> None:
        await self.bus.publish_many([envelope for event in events for envelope in envelopes_for(event)])
