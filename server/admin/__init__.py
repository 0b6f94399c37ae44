"""Graded administration (分级权限): unit admins manage units, users, posts and roles within
their own subtree; every action is checked by ``server/access.py`` and written to the audit log."""
