"""The Xietong messaging server (aiohttp): REST API and, in later parts, the WebSocket gateway;
authentication, the organisation directory, graded administration and the audit log, all on MongoDB
through one store. Shared plumbing (config, errors, store, token verification) lives here and is
imported by the other components."""
