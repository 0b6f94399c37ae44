"""The messaging core: conversations, their ordered event logs, read state and sync."""
