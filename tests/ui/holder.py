"""An SDK process that holds slots in strict mode until its lease is lost: `python holder.py NAME OCCUPY LABEL`.

Prints "acquired" once it holds the slots, then "lost: <message>" when the server ends its lease (the SDK's strict
mode interrupts the body with LeaseLostError), or "finished" if the body ran out first."""

import sys
import time

from gcl.errors import LeaseLostError
from gcl.sync import concurrency


def main():
    name, occupy, label = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    holder = {"type": "test", "id": "ui-holder", "label": label}
    try:
        # A short lease: the renewal (every ~3/4 of it) learns of a revoke within about a second.
        with concurrency(name, occupy=occupy, lease_duration=1.5, strict=True, holder=holder, timeout_seconds=10):
            print("acquired", flush=True)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                time.sleep(0.05)
        print("finished", flush=True)
    except LeaseLostError as exc:
        print(f"lost: {exc}", flush=True)


if __name__ == "__main__":
    main()
