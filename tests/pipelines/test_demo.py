"""The Gradio demo: its logic directly, and the app driven in a real headless Chromium."""

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import ROOT
from tests.readme_fixtures import tiny_pipeline

gradio = pytest.importorskip("gradio", reason="the demo is an extra: pip install -e .[demo]")


@pytest.fixture(scope="module")
def pipeline_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("demo") / "pipe"
    tiny_pipeline(folder)
    return folder


def test_demo_logic_handles_bad_input_as_messages(pipeline_folder, tmp_path):
    from pipelines import VQWAEPipeline
    from pipelines.demo import Demo

    demo = Demo(VQWAEPipeline.from_pretrained(pipeline_folder))
    first = demo.generate("3", 2.0, 1.0, 0, 7, 4)
    again = demo.generate("3", 2.0, 1.0, 0, 7, 4)
    assert np.array_equal(np.asarray(first[0]), np.asarray(again[0])) and "4 sample(s)" in first[2]
    assert "guidance needs a class" in demo.generate("unconditional", 2.0, 1.0, 0, 0, 2)[2]
    corrupt = tmp_path / "broken.png"
    corrupt.write_bytes(b"not a png at all")
    assert "broken.png is not an image" in demo.tokenize(str(corrupt), None)[-1]
    colour = tmp_path / "colour.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8)).save(colour)
    original, reconstruction, codes, used, message = demo.tokenize(str(colour), None)
    assert "converted the RGB image to grey" in message and "resized 30x40 to 16x16" in message
    assert original.size == reconstruction.size and "PSNR" in message
    digit = demo.tokenize(None, 7)  # a test digit of the embedded MNIST, resized as in training
    assert digit[0].size == digit[1].size and digit[-1].startswith("PSNR") and "resized" not in digit[-1]
    assert "index must lie in [0, 10000)" in demo.tokenize(None, 10_000)[-1]


def test_requests_beyond_the_pages_limits_are_refused_as_messages(pipeline_folder, tmp_path):
    """What an API client can send but the page would not: each refused with a message, before any
    work (no sampling for a count over the limit, no decoding of an oversized upload)."""
    from pipelines import VQWAEPipeline
    from pipelines.demo import MAX_IMAGES, MAX_UPLOAD_MB, MAX_UPLOAD_PIXELS, Demo

    demo = Demo(VQWAEPipeline.from_pretrained(pipeline_folder))
    for count in (0, -3, MAX_IMAGES + 1, 10**9, 2.5, float("nan"), "many"):
        samples, codes, message = demo.generate("3", 2.0, 1.0, 0, 0, count)
        assert samples is None and f"images must be a whole number in [1, {MAX_IMAGES}]" in message, (count, message)
    assert demo.generate("3", 2.0, 1.0, 0, 0, MAX_IMAGES)[0] is not None  # the limit itself is served
    assert "seed must be a whole number" in demo.generate("3", 2.0, 1.0, 0, float("inf"), 2)[2]
    assert "class must be one of" in demo.generate("eleven", 2.0, 1.0, 0, 0, 2)[2]
    assert "temperature must be > 0" in demo.generate("3", 2.0, 0.0, 0, 0, 2)[2]
    assert "upload an image or pick a test digit" in demo.tokenize(None, None)[-1]
    huge = tmp_path / "huge.png"
    huge.write_bytes(b"\0" * (MAX_UPLOAD_MB * 2**20 + 1))
    assert f"upload at most {MAX_UPLOAD_MB} MB" in demo.tokenize(str(huge), None)[-1]
    side = int(MAX_UPLOAD_PIXELS**0.5) + 1
    wide = tmp_path / "wide.png"
    Image.new("L", (side, side)).save(wide)  # small on disk, too many pixels to decode
    assert f"is {side}x{side} pixels; upload at most" in demo.tokenize(str(wide), None)[-1]


def test_a_class_on_an_unconditional_prior_is_a_message(tmp_path):
    from pipelines import VQWAEPipeline
    from pipelines.demo import UNCONDITIONAL, Demo

    tiny_pipeline(tmp_path / "uncond", num_classes=0)
    demo = Demo(VQWAEPipeline.from_pretrained(tmp_path / "uncond"))
    assert demo.class_choices == [UNCONDITIONAL]
    assert "this prior is unconditional: choose 'unconditional', not class 3" in demo.generate("3", 1.0, 1.0, 0, 0, 2)[2]
    assert demo.generate(UNCONDITIONAL, 1.0, 1.0, 0, 0, 2)[0] is not None


def test_twenty_clients_at_once_all_answer_in_order_of_arrival(pipeline_folder, monkeypatch):
    """The app on loopback and 20 gradio_client clients submitting while the first request holds
    the queue (each submitted once the one before has joined it): every one answers, one at a
    time, in the order they arrived."""
    import threading

    from gradio_client import Client
    from gradio_client.utils import Status

    from pipelines import VQWAEPipeline
    from pipelines import demo as demo_module

    served, overlapping, running, gate = [], [], [0], threading.Event()
    generate = demo_module.Demo.generate

    def recording(self, label, guidance, temperature, top_k, seed, count):
        running[0] += 1
        overlapping.append(running[0] > 1)
        if not served:
            gate.wait(timeout=60)  # the first request holds the queue until all 20 have arrived
        served.append(int(seed))
        try:
            return generate(self, label, guidance, temperature, top_k, seed, count)
        finally:
            running[0] -= 1

    monkeypatch.setattr(demo_module.Demo, "generate", recording)
    app = demo_module.build_app(VQWAEPipeline.from_pretrained(pipeline_folder))
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, share=False, quiet=True)
    try:
        clients = [Client(f"http://127.0.0.1:{port}/", verbose=False) for _ in range(20)]
        jobs = []
        for seed, client in enumerate(clients):
            jobs.append(client.submit("3", 2.0, 1.0, 0, seed, 4, fn_index=0))
            deadline = time.monotonic() + 30
            while jobs[-1].status().code in (Status.STARTING, Status.JOINING_QUEUE) and time.monotonic() < deadline:
                time.sleep(0.01)  # arrived: queued (or, the first, processing)
        gate.set()
        results = [job.result(timeout=120) for job in jobs]
    finally:
        app.close()
    assert served == list(range(20)) and not any(overlapping)
    assert all(message.startswith("4 sample(s), class 3") and f"seed {seed}" in message
               for seed, (_, _, message) in enumerate(results))  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def browser(pipeline_folder):
    """The demo served on 127.0.0.1 and a headless Chromium (Selenium) pointed at it; the tiny
    untrained pipeline unless $VQWAE_DEMO_PIPELINE names a trained one (for a screenshot)."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="the browser test needs selenium (test extra)")
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver_path):
        pytest.skip("no Chromium here: apt-get install chromium chromium-driver (.ci/run does)")
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1"}
    folder = os.environ.get("VQWAE_DEMO_PIPELINE") or str(pipeline_folder)
    server = subprocess.Popen([sys.executable, "-m", "pipelines.demo", "--pipeline", folder, "--port",
                               str(port)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"the demo did not start: {server.stdout.read().decode()[-2000:]}")
            time.sleep(0.5)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1100",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=webdriver.ChromeService(driver_path), options=options)
    driver.get(url)
    yield driver, url
    driver.quit()
    server.terminate()
    server.wait(timeout=30)


def wait_for_element(driver, by: str, selector: str, timeout: float = 120):
    """The element once the page has rendered it: Gradio builds the page in the browser after the
    first load, so a test that runs first must not look before that."""
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(expected_conditions.presence_of_element_located((by, selector)))


def wait_for_text(driver, element_id: str, text: str, timeout: float = 120) -> str:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(lambda d: text in d.find_element(By.ID, element_id).text)
    return driver.find_element(By.ID, element_id).text


def shown_pixels(driver, element_id: str) -> np.ndarray:
    from selenium.webdriver.common.by import By

    source = driver.find_element(By.CSS_SELECTOR, f"#{element_id} img").get_attribute("src")
    with urllib.request.urlopen(source, timeout=10) as response:
        return np.asarray(Image.open(io.BytesIO(response.read())))


def test_generate_in_a_browser_same_seed_same_pixels(browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    driver, url = browser
    seed = WebDriverWait(driver, 60).until(
        expected_conditions.element_to_be_clickable((By.CSS_SELECTOR, "#seed input"))
    )

    def generate_with(value: int) -> np.ndarray:
        seed.clear()
        seed.send_keys(str(value))
        driver.find_element(By.ID, "generate").click()
        wait_for_text(driver, "generate-status", f"seed {value}")
        return shown_pixels(driver, "samples")

    first, other, again = generate_with(0), generate_with(1), generate_with(0)
    assert first.size > 0 and np.array_equal(first, again) and not np.array_equal(first, other)
    screenshot = os.environ.get("VQWAE_DEMO_SCREENSHOT")
    if screenshot:  # how docs/demo.png was made
        driver.save_screenshot(screenshot)
    loaded = driver.execute_script("return performance.getEntriesByType('resource').map(entry => entry.name)")
    offsite = [name for name in loaded if not name.startswith((url, "data:", "blob:"))]
    assert not offsite, f"the page fetched from the network: {offsite}"


def test_corrupt_upload_is_a_message_in_the_page(browser, tmp_path):
    from selenium.webdriver.common.by import By

    driver, _ = browser
    wait_for_element(driver, By.XPATH, "//button[@role='tab' and contains(., 'Tokenize')]").click()
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n but then garbage")
    wait_for_element(driver, By.CSS_SELECTOR, "#upload input[type='file']").send_keys(str(corrupt))
    message = wait_for_text(driver, "tokenize-status", "is not an image")
    assert "corrupt.png" in message and "Traceback" not in driver.page_source


def test_without_a_pipeline_the_demo_opens_on_the_shipped_one(monkeypatch):
    from pipelines import demo
    from pipelines.ship import SHIPPED

    opened = {}

    class App:
        def launch(self, **options):
            opened["options"] = options

    def build_app(pipe):
        opened["pipe"] = pipe
        return App()

    monkeypatch.setattr(demo, "build_app", build_app)
    demo.main([])
    shipped = json.loads((SHIPPED / "pipeline_config.json").read_text())
    assert opened["pipe"].tokenizer_id == shipped["tokenizer_id"] and opened["options"]["server_name"] == "127.0.0.1"
