"""Authentication: Argon2id passwords with lockout, TOTP second factor, Ed25519-signed access
tokens with a published JWKS, and per-device rotating refresh tokens (see docs/auth.md)."""
