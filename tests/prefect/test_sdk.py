"""Prefect's SDK (prefect.concurrency.sync / .asyncio) against GCL: slots, waits, errors, leases and events."""

import uuid


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_concurrency_sync_occupy_and_several_names(prefect):
    db, api = unique("db"), unique("api")
    prefect.limit(db, limit=3)
    prefect.limit(api, limit=2)
    result = prefect.run(f"""
        from prefect.concurrency.sync import concurrency
        with concurrency([{db!r}, {api!r}], occupy=2):
            inside = [activity(name, "acquired")[0]["slots"] for name in ({db!r}, {api!r})]
            held = [httpx.get(f"{{API}}/v2/concurrency_limits/{{n}}").json()["active_slots"] for n in ({db!r}, {api!r})]
        after = [httpx.get(f"{{API}}/v2/concurrency_limits/{{n}}").json()["active_slots"] for n in ({db!r}, {api!r})]
        events = wait_for_events({db!r}, 2) + wait_for_events({api!r}, 2)
        done(inside=inside, held=held, after=after, events=sorted(e["detail"]["event"] for e in events),
             slots=[e["slots"] for e in events])
    """)
    assert result["inside"] == [2, 2] and result["held"] == [2, 2] and result["after"] == [0, 0]
    assert result["events"] == ["prefect.concurrency-limit.acquired"] * 2 + ["prefect.concurrency-limit.released"] * 2
    assert result["slots"] == [2, 2, 2, 2]


def test_concurrency_async_waits_for_a_free_slot(prefect):
    name = unique("async")
    prefect.limit(name, limit=1)
    result = prefect.run(f"""
        import asyncio
        from prefect.concurrency.asyncio import concurrency

        async def work(i, log):
            async with concurrency({name!r}, occupy=1):
                log.append(("in", i))
                await asyncio.sleep(0.3)
                log.append(("out", i))

        async def main():
            log = []
            started = time.monotonic()
            await asyncio.gather(*(work(i, log) for i in range(3)))
            return log, time.monotonic() - started

        log, took = asyncio.run(main())
        wait_for_events({name!r}, 6)
        done(log=log, took=took)
    """)
    log = [tuple(entry) for entry in result["log"]]
    for k in range(0, 6, 2):  # one holder at a time: every "in" is followed by its own "out"
        assert log[k][0] == "in" and log[k + 1] == ("out", log[k][1])
    assert result["took"] >= 0.9


def test_timeout_seconds_sync_and_async(prefect):
    name = unique("full")
    prefect.limit(name, limit=1)
    result = prefect.run(
        f"""
        import asyncio
        from prefect.concurrency.sync import concurrency
        from prefect.concurrency.asyncio import concurrency as aconcurrency
        from prefect.concurrency._asyncio import AcquireConcurrencySlotTimeoutError  # noqa: F401

        outcomes = []
        with concurrency({name!r}):
            started = time.monotonic()
            try:
                with concurrency({name!r}, timeout_seconds=1):
                    outcomes.append("sync entered")
            except TimeoutError as exc:
                outcomes.append(["sync", type(exc).__name__, round(time.monotonic() - started, 1)])

            async def other():
                started = time.monotonic()
                try:
                    async with aconcurrency({name!r}, timeout_seconds=1):
                        outcomes.append("async entered")
                except TimeoutError as exc:
                    outcomes.append(["async", type(exc).__name__, round(time.monotonic() - started, 1)])

            asyncio.run(other())
        wait_for_events({name!r}, 2)
        done(outcomes=outcomes)
        """,
        quiet=False,
    )
    # Prefect's acquisition service itself logs each timeout as an error, whatever the server: nothing else
    logged = [line for line in prefect.stderr.splitlines() if line.strip()]
    assert len(logged) == 2 and all("failed to process item" in line and "TimeoutError" in line for line in logged)
    assert [o[:2] for o in result["outcomes"]] == [
        ["sync", "AcquireConcurrencySlotTimeoutError"],
        ["async", "AcquireConcurrencySlotTimeoutError"],
    ]
    assert all(1.0 <= o[2] < 4 for o in result["outcomes"])


def test_strict_raises_and_lenient_warns_on_a_missing_limit(prefect):
    missing = unique("missing")
    result = prefect.run(
        f"""
        import asyncio
        from prefect.concurrency.sync import concurrency
        from prefect.concurrency.asyncio import concurrency as aconcurrency
        from prefect.concurrency._asyncio import ConcurrencySlotAcquisitionError

        errors = []
        try:
            with concurrency({missing!r}, strict=True):
                errors.append("entered")
        except ConcurrencySlotAcquisitionError as exc:
            errors.append(str(exc))

        async def strict():
            try:
                async with aconcurrency({missing!r}, strict=True):
                    errors.append("entered")
            except ConcurrencySlotAcquisitionError as exc:
                errors.append(str(exc))

        asyncio.run(strict())
        with concurrency({missing!r}):  # not strict: Prefect warns and runs the body unlimited
            ran = True
        done(errors=errors, ran=ran)
        """,
        quiet=False,
    )
    assert result["ran"] is True
    expected = f"{[missing]} must be created before acquiring slots"
    assert len(result["errors"]) == 2 and all(expected in error for error in result["errors"])
    warnings = [line for line in prefect.stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 1 and f"['{missing}'] do not exist - skipping acquisition" in warnings[0], prefect.stderr


def test_rate_limit_sync_and_async(prefect):
    name = unique("rate")
    prefect.limit(name, limit=1, slot_decay_per_second=5.0)
    result = prefect.run(f"""
        import asyncio
        from prefect.concurrency.sync import rate_limit
        from prefect.concurrency.asyncio import rate_limit as arate_limit

        started = time.monotonic()
        for _ in range(4):
            rate_limit({name!r})
        sync_took = time.monotonic() - started

        async def main():
            started = time.monotonic()
            for _ in range(4):
                await arate_limit({name!r}, occupy=1)
            return time.monotonic() - started

        async_took = asyncio.run(main())
        wait_for_events({name!r}, 8)
        done(sync_took=sync_took, async_took=async_took, grants=len(activity({name!r}, "acquired")))
    """)
    # one slot per 0.2 s: the 4 calls span at least the 3 decays after the first (Prefect polls, so allow slack)
    assert 0.55 <= result["sync_took"] < 6 and 0.55 <= result["async_took"] < 6
    assert result["grants"] == 8


def test_rate_limit_on_a_plain_limit_is_refused(prefect):
    name = unique("plain")
    prefect.limit(name, limit=1)
    result = prefect.run(
        f"""
        from prefect.concurrency.sync import rate_limit
        try:
            rate_limit({name!r})
            outcome = "granted"
        except Exception as exc:
            outcome = type(exc).__name__ + ": " + str(exc)
        done(outcome=outcome)
        """,
        quiet=False,
    )
    # Prefect's SDK formats the 422 from its exception_detail, as against a Prefect server
    assert result["outcome"].startswith("ConcurrencySlotAcquisitionError") and "422" in result["outcome"]
    assert "Only concurrency limits with slot decay can be used for rate limiting" in result["outcome"]
    assert name in result["outcome"]


def test_lease_renewed_past_its_first_expiry(prefect):
    name = unique("lease")
    prefect.limit(name, limit=1)
    result = prefect.run(f"""
        from prefect.concurrency.sync import concurrency
        with concurrency({name!r}, lease_duration=2):
            lease = httpx.get(f"{{API}}/v2/concurrency_limits/{name}/leases").json()[0]
            time.sleep(5)  # 2.5 lease lengths: only renewals (every 1.5 s) keep it
            later = httpx.get(f"{{API}}/v2/concurrency_limits/{name}/leases").json()
            held = httpx.get(f"{{API}}/v2/concurrency_limits/{name}").json()["active_slots"]
        wait_for_events({name!r}, 2)
        done(first=lease, later=later, held=held, expired=activity({name!r}, "expired"))
    """)
    assert result["held"] == 1 and result["expired"] == []
    assert len(result["later"]) == 1 and result["later"][0]["fencing_token"] == result["first"]["fencing_token"]
    assert result["later"][0]["expires"] > result["first"]["expires"]
    assert prefect.read(name)["active_slots"] == 0
