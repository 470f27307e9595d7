"""One contending SDK client process for the fault suite: holds a limit again and again, recording every hold.

Usage: python -m tests.faults.client API_URL NAME OUT_JSON STOP_FILE SEED [LEASE_SECONDS]

Hold intervals are taken with time.time() (one clock for every process on the host) inside the `with` body: entered
after the grant arrived, left before the release is sent, so an overlap seen here really happened on the server.
"""

import json
import os
import random
import sys
import time
import warnings

from gcl import GCLError
from gcl.sync import concurrency

LEASE_SECONDS = 0.5  # short, so leases granted just before a whole-server kill have expired when it is back
ACQUIRE_TIMEOUT_SECONDS = 20.0
BUDGET_SECONDS = 120.0  # a client never outlives this, whatever the test does


def main(api_url, name, out, stop_file, seed, lease_seconds=LEASE_SECONDS):
    rng = random.Random(seed)
    record = {"holds": [], "waits": [], "errors": [], "unexpected": [], "warnings": []}
    deadline = time.time() + BUDGET_SECONDS
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        while not os.path.exists(stop_file) and time.time() < deadline:
            asked = time.time()
            try:
                with concurrency(
                    name,
                    occupy=1,
                    timeout_seconds=ACQUIRE_TIMEOUT_SECONDS,
                    lease_duration=lease_seconds,
                    strict=True,
                    api_url=api_url,
                    holder={"type": "fault-client", "id": str(seed)},
                ) as held:
                    entered = time.time()
                    time.sleep(rng.uniform(0.01, 0.04))
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
    main(*sys.argv[1:5], int(sys.argv[5]), *map(float, sys.argv[6:7]))
