"""End to end in a real browser: the system's Chromium loads the page, uploads images, shows the predictions."""

import pytest

from tests.serve.browser import cards, chromium, drop, find_browser, upload, wait_for
from tests.serve.helpers import image_bytes, live_server
from vitkit.predict import predict

FOUND = find_browser()
pytestmark = pytest.mark.skipif(
    FOUND is None,
    reason="!!! NO BROWSER: chromium and chromedriver not found, the end-to-end browser test DID NOT RUN "
    "(apt-get install chromium chromium-driver) !!!",
)


def test_the_page_classifies_an_uploaded_image_and_reports_errors(model, tmp_path):
    pytest.importorskip("selenium", reason="!!! the browser test needs selenium (the test extra) !!!")
    from vitkit.serve.app import create_app
    from vitkit.serve.backend import make_backend

    good, bad = tmp_path / "shoe.png", tmp_path / "notes.png"
    good.write_bytes(image_bytes((64, 48), seed=11))
    bad.write_bytes(b"these are notes, not an image")
    expected = predict(model, [str(good)], topk=5)[0].topk

    with live_server(create_app(make_backend(model))) as url, chromium(*FOUND) as browser:
        browser.get(url + "/")
        wait_for(browser, lambda b: model.model_name in b.find_element("id", "model").text)
        upload(browser, str(good))
        wait_for(browser, lambda b: [c["state"] for c in cards(b)] == ["done"])
        (card,) = cards(browser)
        assert card["file"] == "shoe.png"
        assert [label for label, _ in card["rows"]] == [name for _, name, _ in expected]
        assert card["rows"][0][1] == f"{100 * expected[0][2]:.1f}%"

        upload(browser, str(bad))  # the error is shown in the page, on the file's own card
        wait_for(browser, lambda b: cards(b)[0]["state"] == "error")
        assert "notes.png: cannot read image (unknown format" in cards(browser)[0]["status"]

        browser.find_element("id", "explain").click()  # the overlay toggle: an overlay, or the server's reason why not
        wait_for(browser, lambda b: cards(b)[1]["note"] not in ("", "Explaining…"))
        shown = cards(browser)[1]
        assert shown["overlay"] or "explanations are not available" in shown["note"]

        drop(browser, "dropped.png", good.read_bytes())  # drag and drop: classified like a chosen file
        wait_for(browser, lambda b: len(cards(b)) == 3 and cards(b)[0]["state"] == "done")
        assert cards(browser)[0]["file"] == "dropped.png"
        assert cards(browser)[0]["rows"] == card["rows"]

        browser.save_screenshot(str(tmp_path / "serve.png"))
        csp = [e["message"] for e in browser.get_log("browser") if "Content Security Policy" in e["message"]]
        assert not csp, csp  # the page's own script and style are allowed by the policy it is served with
