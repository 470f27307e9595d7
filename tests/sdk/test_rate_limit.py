"""rate_limit() against a live server: pacing, errors, missing names (sync and async twins)."""

import asyncio
import time

import gcl
import pytest
from gcl import asyncio as gasync
from gcl import sync as gsync

from .conftest import ghost

pytestmark = [pytest.mark.usefixtures("gcl_env"), pytest.mark.timeout(60)]
RATE, CALLS = 5.0, 8


def assert_paced(start, stamps):
    """Limit 1, decay RATE: admission k comes >= k/RATE after admission 0, which comes after ``start``
    (sent before the first call); each stamp is taken after its admission. So stamp k - start >= k/RATE."""
    for k, stamp in enumerate(stamps):
        assert stamp - start >= k / RATE - 0.005, (k, stamp - start)
    assert stamps[-1] - start <= (CALLS - 1) / RATE * 1.5 + 0.5  # and it keeps moving


def test_rate_limit_pacing_sync(admin, make_limit):
    name = make_limit(limit=1, decay=RATE)
    stamps, start = [], time.monotonic()
    for _ in range(CALLS):
        gsync.rate_limit(name, timeout_seconds=10)
        stamps.append(time.monotonic())
    assert_paced(start, stamps)
    assert admin.leases(name) == []  # rate limits never hold leases


def test_rate_limit_pacing_async(make_limit):
    name = make_limit(limit=1, decay=RATE)

    async def main():
        stamps, start = [], time.monotonic()
        for _ in range(CALLS):
            await gasync.rate_limit(name, timeout_seconds=10)
            stamps.append(time.monotonic())
        return start, stamps

    assert_paced(*asyncio.run(main()))


def test_rate_limit_errors_sync(make_limit):
    plain, paced = make_limit(limit=1), make_limit(limit=1, decay=0.1)
    with pytest.raises(gcl.ConcurrencySlotAcquisitionError, match=plain):
        gsync.rate_limit(plain)  # no decay configured: the server's 422 message
    gsync.rate_limit(paced)
    with pytest.raises(gcl.AcquireConcurrencySlotTimeoutError):
        gsync.rate_limit(paced, timeout_seconds=0.3)
    missing = ghost()
    with pytest.warns(gcl.MissingLimitWarning, match=missing):
        gsync.rate_limit(missing)
    with pytest.raises(gcl.ConcurrencySlotAcquisitionError, match=missing):
        gsync.rate_limit(missing, strict=True)


def test_rate_limit_errors_async(make_limit):
    plain, paced = make_limit(limit=1), make_limit(limit=1, decay=0.1)
    missing = ghost()

    async def main():
        with pytest.raises(gcl.ConcurrencySlotAcquisitionError, match=plain):
            await gasync.rate_limit(plain)
        await gasync.rate_limit(paced)
        with pytest.raises(gcl.AcquireConcurrencySlotTimeoutError):
            await gasync.rate_limit(paced, timeout_seconds=0.3)
        with pytest.warns(gcl.MissingLimitWarning, match=missing):
            await gasync.rate_limit(missing)
        with pytest.raises(gcl.ConcurrencySlotAcquisitionError, match=missing):
            await gasync.rate_limit(missing, strict=True)

    asyncio.run(main())
