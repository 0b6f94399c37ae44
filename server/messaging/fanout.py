"""Publishing stored events to the bus, each encoded once for all its recipients."""

from __future__ import annotations

from ..bus import Bus, Envelope
from ..gateway.frames import event_frame
from .models import Event

JOINS = {"conversation.created", "member.joined"}
LEAVES = {"member.left", "member.removed"}


def envelope_for(event: Event) -> Envelope:
    joined = event.data.user_ids if event.type in JOINS and event.data else []
    left = event.data.user_ids if event.type in LEAVES and event.data else []
    return Envelope(kind="conversation", target=event.conversation_id, frame=event_frame(event),
                    members_added=list(joined), members_removed=list(left))


class Fanout:
    """The event writer's ``on_written``: persist, then publish."""

    def __init__(self, bus: Bus):
        self.bus = bus

    async def events_written(self, events: list[Event]) -> None:
        await self.bus.publish_many([envelope_for(event) for event in events])
