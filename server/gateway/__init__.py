"""The realtime gateway: one WebSocket per device, typed frames, bounded queues, fan-out from the
bus to local connections (docs/protocol.md)."""
