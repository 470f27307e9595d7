"""Exceptions and warnings raised by the GCL SDK."""

from __future__ import annotations


class GCLError(Exception):
    """Base class of every error raised by the ``gcl`` package."""


class GCLConnectionError(GCLError):
    """The control plane could not be reached (connection refused, reset, timed out)."""


class APIError(GCLError):
    """The control plane answered with an error status."""

    status_code: int = 0

    def __init__(self, message: str, status_code: int | None = None, body: object = None) -> None:
        super().__init__(message)
        self.message = message
        if status_code is not None:
            self.status_code = status_code
        self.body = body


class ValidationError(APIError):
    """400/422: the request was rejected as invalid."""

    status_code = 422


class AuthenticationError(APIError):
    """401: missing or wrong API key."""

    status_code = 401


class PermissionDeniedError(APIError):
    """403: the API key's scope does not allow this action."""

    status_code = 403


class NotFoundError(APIError):
    """404: no such limit or lease."""

    status_code = 404


class ConflictError(APIError):
    """409: a limit with that name already exists."""

    status_code = 409


class LeaseLostError(APIError):
    """410: the lease expired or was revoked; its slots are no longer held."""

    status_code = 410


class PreconditionFailedError(APIError):
    """412: the ``If-Match`` ETag no longer matches."""

    status_code = 412


class SlotsUnavailableError(APIError):
    """423: no slot is free right now (see ``retry_after``)."""

    status_code = 423


class ServerError(APIError):
    """5xx: the control plane failed."""

    status_code = 500


class ConcurrencySlotAcquisitionError(GCLError):
    """Slots could not be acquired (server error, strict missing limits, retries exhausted)."""


class AcquireConcurrencySlotTimeoutError(ConcurrencySlotAcquisitionError, TimeoutError):
    """``timeout_seconds`` elapsed before the slots were acquired."""


class GCLWarning(UserWarning):
    """Base class of the warnings emitted by the ``gcl`` package."""


class MissingLimitWarning(GCLWarning):
    """Some requested limit names do not exist, so they do not limit anything."""


class LeaseLostWarning(GCLWarning):
    """The lease was lost while the body ran; the slots were no longer reserved."""


class ReleaseFailedWarning(GCLWarning):
    """Releasing slots failed; the server frees them when the lease expires."""
