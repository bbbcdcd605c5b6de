"""Fixtures shared by the tests: a tokenizer file, a local Ray cluster, S3 servers on loopback (the tiny
models they build on are in tests/tiny_models.py)."""

from __future__ import annotations

import gzip
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub

TINY_MERGES = ["h e", "l l", "he ll", "hell o</w>", "c a", "ca t</w>", "d o", "do g</w>", "p h", "o t", "ot o</w>", "ph oto</w>"]


@pytest.fixture(scope="session")
def bpe_path(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("bpe") / "bpe_simple_vocab_16e6.txt.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("#version: 0.2\n" + "\n".join(TINY_MERGES) + "\n")
    return str(path)


@pytest.fixture(scope="session")
def ray_cluster():
    """One real local Ray cluster for the session (2 CPUs, every port on loopback)."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)  # never a leftover cluster
    yield ray
    ray.shutdown()


@pytest.fixture
def images() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.rand(3, 3, 30, 36, generator=generator)


@pytest.fixture
def s3_endpoint(monkeypatch):
    """A moto S3 server on loopback, with test credentials in the environment."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    for name, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()
