"""Presence: online / away / offline and last seen, aggregated over a user's devices, expiring by
heartbeat TTL, debounced, and delivered only to watchers allowed to see it (docs/flows/presence.md)."""
