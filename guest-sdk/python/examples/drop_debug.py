"""Drops events whose `level` is exactly the string "DEBUG"."""

FIELDS = ["level"]


def filter(event):
    return not event.str_eq("level", "DEBUG")
