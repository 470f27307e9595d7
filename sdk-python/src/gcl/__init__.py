"""GCL SDK: global concurrency and rate limits (sync, asyncio) and a CRUD client."""

from gcl._leases import HeldSlots
from gcl._wire import Lease, Limit
from gcl.client import AsyncClient, Client
from gcl.errors import (
    AcquireConcurrencySlotTimeoutError,
    APIError,
    AuthenticationError,
    ConcurrencySlotAcquisitionError,
    ConflictError,
    GCLConnectionError,
    GCLError,
    GCLWarning,
    LeaseLostError,
    LeaseLostWarning,
    MissingLimitWarning,
    NotFoundError,
    PermissionDeniedError,
    PreconditionFailedError,
    ReleaseFailedWarning,
    ServerError,
    SlotsUnavailableError,
    ValidationError,
)

__version__ = "0.1.0"

__all__ = [
    "APIError",
    "AcquireConcurrencySlotTimeoutError",
    "AsyncClient",
    "AuthenticationError",
    "Client",
    "ConcurrencySlotAcquisitionError",
    "ConflictError",
    "GCLConnectionError",
    "GCLError",
    "GCLWarning",
    "HeldSlots",
    "Lease",
    "LeaseLostError",
    "LeaseLostWarning",
    "Limit",
    "MissingLimitWarning",
    "NotFoundError",
    "PermissionDeniedError",
    "PreconditionFailedError",
    "ReleaseFailedWarning",
    "ServerError",
    "SlotsUnavailableError",
    "ValidationError",
]
