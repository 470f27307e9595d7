"""Take the README's screenshots: `.venv/bin/python -m tests.ui.screenshots [docs/screenshots]`.

A real server in a temporary folder, a few limits held, rate-limited and queued on as in a busy day, and headless
Chromium at 1280 px: the list (list.png) and one limit's page (limit.png)."""

import contextlib
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import Server
from tests.ui.conftest import CHROMEDRIVER, CHROMIUM

LIMITS = [
    ("warehouse-db", 10, 0.0),
    ("openai-api", 5, 2.0),
    ("s3-uploads", 20, 0.0),
    ("slack-webhooks", 1, 0.5),
    ("legacy-etl", 2, 0.0),
    ("gpu-a100", 4, 0.0),
    ("billing-api", 50, 10.0),
]


def scene(server):
    api = server.limits_url
    s = requests.Session()
    for name, limit, decay in LIMITS:
        s.put(f"{api}/{name}", json={"limit": limit, "slot_decay_per_second": decay}).raise_for_status()
    s.patch(f"{api}/s3-uploads", json={"active": False}).raise_for_status()
    for i, (flow, slots) in enumerate([("nightly-load", 3), ("dbt-run", 2), ("backfill-2026-11", 2), ("adhoc", 1)]):
        holder = {"type": "flow_run", "id": f"7f3c{i}a9e", "label": flow}
        body = {"names": ["warehouse-db"], "slots": slots, "holder": holder, "lease_duration": 900}
        s.post(f"{api}/increment-with-lease", json=body).raise_for_status()
    body = {"names": ["legacy-etl", "warehouse-db"], "slots": 1, "holder": {"type": "worker", "id": "etl-2"}}
    s.post(f"{api}/increment-with-lease", json=body).raise_for_status()
    s.post(f"{api}/increment-with-lease", json={"names": ["legacy-etl"], "slots": 1}).raise_for_status()
    for _ in range(4):
        s.post(f"{api}/increment-with-lease", json={"names": ["gpu-a100"], "slots": 1}).raise_for_status()
    for _ in range(12):
        s.post(f"{api}/increment", json={"names": ["openai-api"], "slots": 1, "mode": "rate_limit"})
        time.sleep(0.35)
    s.post(f"{api}/increment", json={"names": ["billing-api"], "slots": 31, "mode": "rate_limit"}).raise_for_status()

    def wait(names, slots, label):
        body = {"names": names, "slots": slots, "wait_seconds": 30, "holder": {"type": "flow_run", "id": label}}
        with contextlib.suppress(requests.RequestException):  # the server stops under it
            requests.post(f"{api}/increment-with-lease", json=body, timeout=40)

    waiters = (
        (["warehouse-db"], 2, "monthly-report"),
        (["warehouse-db", "legacy-etl"], 1, "reconcile"),
        (["gpu-a100"], 2, "train-resnet"),
        (["gpu-a100"], 1, "eval"),
    )
    for names, slots, label in waiters:
        threading.Thread(target=wait, args=(names, slots, label), daemon=True).start()
        time.sleep(0.2)


def main(out):
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(tmp, workers=2, env={"GCL_LEASE_MIN_SECONDS": "60"}).start()
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
            options.add_argument(arg)
        driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
        # No bar caught half-way through its animation.
        reduced = {"features": [{"name": "prefers-reduced-motion", "value": "reduce"}]}
        driver.execute_cdp_cmd("Emulation.setEmulatedMedia", reduced)
        try:
            scene(server)
            wait = WebDriverWait(driver, 10)
            driver.get(server.root + "/")
            wait.until(ec.text_to_be_present_in_element((By.ID, "range"), "of 7"))
            wait.until(ec.text_to_be_present_in_element((By.ID, "limits-body"), "(3 slots)"))
            driver.save_screenshot(str(out / "list.png"))
            driver.get(server.root + "/ui/limits/warehouse-db")
            wait.until(ec.text_to_be_present_in_element((By.ID, "leases-body"), "nightly-load"))
            driver.set_window_size(1280, 1400)
            driver.save_screenshot(str(out / "limit.png"))
        finally:
            driver.quit()
            server.stop()
    print(f"wrote {out / 'list.png'} and {out / 'limit.png'}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/screenshots"))
