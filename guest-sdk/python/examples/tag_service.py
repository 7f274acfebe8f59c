"""Tags every event with "env":"prod" and renames `msg` to `message`."""

FIELDS = ["msg"]


def map(event, edits):
    edits.set_str("env", "prod")
    if event.has("msg"):
        edits.rename("msg", "message")
