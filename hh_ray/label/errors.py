"""What the service refuses, as exceptions that carry their HTTP status (the store, the actions and the web layer
raise them; the web layer only turns them into responses)."""

from __future__ import annotations


class LabelError(Exception):
    """A request the service refuses; `status` is the HTTP status, the message says what is wrong."""

    status = 400


class Invalid(LabelError):
    status = 422


class NotFound(LabelError):
    status = 404


class Conflict(LabelError):
    status = 409


class Forbidden(LabelError):
    status = 403


class SchemaError(LabelError):
    status = 500
