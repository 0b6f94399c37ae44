"""The audit log service: records who did what, to what, when and from where, and lets auditors
read the entries of the part of the organisation they audit."""
