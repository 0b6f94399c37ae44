"""The organisation directory (通讯录): a tree of units with members, browsed and searched
under the visibility rules of ``server/access.py``."""
