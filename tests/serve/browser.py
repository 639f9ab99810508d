"""A headless Chromium driven by Selenium against a live server: shared by the browser test and the screenshot
script. The browser and its driver are the operating system's (Debian: ``apt-get install chromium
chromium-driver``); nothing is downloaded."""

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_browser() -> tuple[str, str] | None:
    """(browser, driver) executables, from $CHROMIUM / $CHROMEDRIVER or the PATH; None when either is missing."""
    browser = os.environ.get("CHROMIUM") or next((p for p in map(shutil.which, BROWSERS) if p), None)
    driver = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@contextmanager
def chromium(browser: str, driver: str, width: int = 1180, height: int = 820) -> Iterator:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}", "--force-device-scale-factor=1", "--hide-scrollbars"):  # fmt: skip
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    session = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    try:
        yield session
    finally:
        session.quit()


def upload(session, *paths: str) -> None:
    """Choose files in the page's file input (what the "choose files" button opens)."""
    from selenium.webdriver.common.by import By

    session.find_element(By.ID, "files").send_keys("\n".join(paths))


def drop(session, name: str, data: bytes) -> None:
    """Drag a file onto the page's drop zone (the events a real drag-and-drop fires, with the file in them)."""
    import base64

    session.execute_script(
        """const [b64, name] = arguments;
           const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
           const dt = new DataTransfer();
           dt.items.add(new File([bytes], name, { type: "image/png" }));
           const zone = document.getElementById("drop");
           for (const type of ["dragenter", "dragover", "drop"]) {
             zone.dispatchEvent(new DragEvent(type, { bubbles: true, cancelable: true, dataTransfer: dt }));
           }""",
        base64.b64encode(data).decode(),
        name,
    )


def wait_for(session, condition, timeout: float = 30.0):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(session, timeout, poll_frequency=0.05).until(lambda s: condition(s))


def cards(session) -> list[dict]:
    """Each result card as the page shows it: file, state, status line, (label, percentage) rows, note."""
    return session.execute_script(
        """return Array.from(document.querySelectorAll('.card')).map(c => ({
             file: c.querySelector('.file').textContent, state: c.dataset.state,
             status: c.querySelector('.status').textContent,
             rows: Array.from(c.querySelectorAll('.bars li')).map(li =>
               [li.querySelector('.label').textContent, li.querySelector('.pct').textContent]),
             note: c.querySelector('.note').hidden ? '' : c.querySelector('.note').textContent,
             overlay: !c.querySelector('.overlay').hidden}));"""
    )
