"""One SDK client process of the fault suites: holds a limit again and again until told to stop, recording every hold.

Usage: python -m tests.faultkit.client API_URL NAME OUT_JSON STOP_FILE SEED LEASE_SECONDS ACQUIRE_TIMEOUT_SECONDS
       BUDGET_SECONDS LONGEST_HOLD_SECONDS (a ``Holding``'s fields, as ``Holding.argv`` writes them)

Hold intervals are taken with time.time() (one clock for every process on the host) inside the `with` body: entered
after the grant arrived, left before the release is sent, so an overlap seen here really happened on the server.
The record (JSON): the limit's name; holds [entered, left, fencing token, overran]; waits [asked, seconds]; errors and
unexpected [time, class, message]; warnings.
"""

import json
import os
import random
import sys
import time
import warnings
from dataclasses import astuple, dataclass

from gcl import GCLError
from gcl.sync import concurrency


@dataclass(frozen=True)
class Holding:
    """How a client holds: its lease, how long one acquire may wait, how long it may run at all (whatever the test
    does), and the longest hold (each hold lasts 10 ms to that, at random)."""

    lease_seconds: float
    acquire_timeout_seconds: float
    budget_seconds: float
    longest_hold_seconds: float

    def argv(self):
        return [str(value) for value in astuple(self)]


def main(api_url, name, out, stop_file, seed, holding):
    rng = random.Random(seed)
    record = {"name": name, "holds": [], "waits": [], "errors": [], "unexpected": [], "warnings": []}
    deadline = time.time() + holding.budget_seconds
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        while not os.path.exists(stop_file) and time.time() < deadline:
            asked = time.time()
            try:
                with concurrency(
                    name,
                    occupy=1,
                    timeout_seconds=holding.acquire_timeout_seconds,
                    lease_duration=holding.lease_seconds,
                    strict=True,
                    api_url=api_url,
                    holder={"type": "fault-client", "id": str(seed)},
                ) as held:
                    entered = time.time()
                    time.sleep(rng.uniform(0.01, holding.longest_hold_seconds))
                    left, remaining = time.time(), held.expires_in()
                # A client descheduled past its lease (a loaded machine) holds nothing after it: the server may then
                # give the slot to another, rightly. The lease's end as this client knows it (counted from when it
                # sent the acquire) is never later than the server's, so the clipped interval is still its own.
                overran = remaining is not None and remaining < 0
                record["holds"].append((entered, left + remaining if overran else left, held.fencing_token, overran))
                record["waits"].append((asked, entered - asked))
            except (GCLError, TimeoutError) as exc:  # a clear error: the SDK's own, naming its cause
                record["errors"].append((time.time(), type(exc).__name__, str(exc)[:300]))
            except Exception as exc:  # anything else is a failure of the SDK or the server
                record["unexpected"].append((time.time(), type(exc).__name__, str(exc)[:300]))
        record["warnings"] = [f"{w.category.__name__}: {str(w.message)[:200]}" for w in caught]
    with open(out + ".tmp", "w") as file:
        json.dump(record, file)
    os.replace(out + ".tmp", out)


if __name__ == "__main__":
    main(*sys.argv[1:5], int(sys.argv[5]), Holding(*map(float, sys.argv[6:10])))
