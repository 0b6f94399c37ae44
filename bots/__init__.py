"""The bot platform: bot accounts, the Bot API, outgoing and incoming webhooks, and the built-in
approval-reminder bot. Built in a later part of the project."""
