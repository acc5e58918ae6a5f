import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# VQWAE_CPU_KERNELS: run as another CPU would (tests/cpu_kernels.py); set before torch loads.
from tests.cpu_kernels import FloatCheck, apply_kernel_setting, check_kernel_setting  # noqa: E402

KERNEL_SETTING = apply_kernel_setting()
import torch  # noqa: E402

check_kernel_setting(KERNEL_SETTING)
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or min(2, os.cpu_count() or 1)))


def pytest_report_header(config):
    return f"CPU kernels: {KERNEL_SETTING} (ATen {torch.backends.cpu.get_cpu_capability()}), {torch.get_num_threads()} threads"


@pytest.fixture
def float_check(request) -> FloatCheck:
    """Float comparisons with tolerances measured across CPU kernels (tests/cpu_kernels.py)."""
    return FloatCheck(request.node.nodeid)


@pytest.fixture
def repo_root() -> Path:
    return ROOT


@pytest.fixture
def train(monkeypatch):
    """Run stage one in-process on the tiny config with `key=value` overrides (from the repo root,
    Accelerate's process-wide state reset around each run)."""
    from tests.helpers import reset_accelerate
    from tokenizer import train as train_module

    monkeypatch.chdir(ROOT)

    def run(*overrides):
        reset_accelerate()
        return train_module.main(["--config", "configs/tokenizer/tiny.yaml", *overrides])

    yield run
    reset_accelerate()


@pytest.fixture(scope="session")
def small_digit_classifier(tmp_path_factory):
    """A digit classifier trained on the first 6,000 MNIST training images for two epochs (seconds),
    cached in its own folder: (folder, model, info)."""
    from infra.metrics.digit_classifier import load_classifier

    folder = tmp_path_factory.mktemp("digit-classifier")
    return folder, *load_classifier(folder, epochs=2, train_images=6000, progress=False)


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """huggingface_hub.HfApi replaced by one that copies each upload to `.folder / repo_id` and
    lists the repos it created in `.created`; a token is set, the network never touched."""
    import shutil
    from types import SimpleNamespace

    import huggingface_hub

    hub = tmp_path / "hub"
    created = []

    class FakeApi:
        def create_repo(self, repo_id, exist_ok=False):
            created.append(repo_id)

        def upload_folder(self, repo_id, folder_path, commit_message=""):
            shutil.copytree(folder_path, hub / repo_id)
            return type("Info", (), {"commit_url": f"https://hf.co/{repo_id}/commit/1"})()

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")  # pushing needs a token; the fake API never sends it
    return SimpleNamespace(folder=hub, created=created)
