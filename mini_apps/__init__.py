"""The workbench platform (app registry, launch codes, interactive cards, JS bridge) and the
mini-apps approvals and vehicle booking. Built in a later part of the project."""
