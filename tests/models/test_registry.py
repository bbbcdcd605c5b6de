import json

import pytest
import torch

from pipeline.models import ModelSpec, WeightsNotFoundError, load_encoder, load_reconstructor
from pipeline.models.reconstructors import VAEReconstructor
from tests.tiny_models import tiny_vae


def test_spec_parsing():
    spec = ModelSpec.parse("vae:runwayml/stable-diffusion-v1-5#vae")
    assert (spec.kind, spec.location, spec.subfolder) == ("vae", "runwayml/stable-diffusion-v1-5", "vae")
    assert str(spec) == "vae:runwayml/stable-diffusion-v1-5#vae"
    assert ModelSpec.parse("imagebind:/x/imagebind_huge.pth").location == "/x/imagebind_huge.pth"
    assert ModelSpec.parse("clip:s3://bucket/models/clip").location == "s3://bucket/models/clip"
    with pytest.raises(ValueError, match="KIND:LOCATION"):
        ModelSpec.parse("stabilityai/sd-vae-ft-mse")
    with pytest.raises(ValueError, match="unknown model kind"):
        ModelSpec.parse("gan:/x")


def test_kind_mismatch_is_refused():
    with pytest.raises(ValueError, match="encoder spec"):
        load_reconstructor("clip:/nowhere")
    with pytest.raises(ValueError, match="reconstructor spec"):
        load_encoder("vae:/nowhere")


def test_missing_local_directory(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="no file or directory"):
        load_reconstructor(f"vae:{tmp_path}/absent")


def test_missing_hub_weights_say_where_and_how(tmp_path):
    with pytest.raises(WeightsNotFoundError) as info:
        load_reconstructor("vae:stabilityai/sd-vae-ft-mse", hf_cache_dir=str(tmp_path), allow_download=False)
    message = str(info.value)
    assert str(tmp_path) in message
    assert "hf download stabilityai/sd-vae-ft-mse" in message and "vae:/path/to/dir" in message


def test_subfolder_and_options_file(tmp_path):
    tiny_vae().save_pretrained(tmp_path / "vae")
    (tmp_path / "vae" / "disillusion.json").write_text(json.dumps({"resolution": 16, "sample_scale": 0.5}))
    recon = load_reconstructor(f"vae:{tmp_path}#vae")
    assert isinstance(recon, VAEReconstructor)
    assert recon.resolution == 16 and recon.sample_scale == 0.5
    assert load_reconstructor(f"vae:{tmp_path}#vae", sample_scale=2.0).sample_scale == 2.0  # explicit wins


def test_dtype_and_device_placement(tmp_path):
    tiny_vae().save_pretrained(tmp_path)
    recon = load_reconstructor(f"vae:{tmp_path}", dtype=torch.bfloat16)
    assert recon.vae.dtype == torch.bfloat16
    out = recon.reconstruct(torch.rand(1, 3, 16, 16), 2)
    assert out.dtype == torch.float32 and out.shape == (1, 2, 3, 16, 16)


def test_s3_location_is_copied_to_the_cache_once(tmp_path, monkeypatch):
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        for name, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}.items():
            monkeypatch.setenv(name, value)
        client = boto3.client("s3", endpoint_url=endpoint)
        client.create_bucket(Bucket="models")
        local = tmp_path / "vae"
        tiny_vae().save_pretrained(local)
        for path in local.iterdir():
            client.upload_file(str(path), "models", f"demo/vae/{path.name}")

        cache = tmp_path / "cache"
        recon = load_reconstructor("vae:s3://models/demo/vae", cache_dir=str(cache), s3_endpoint=endpoint)
        assert recon.fingerprint == VAEReconstructor(tiny_vae()).fingerprint
        client.delete_object(Bucket="models", Key="demo/vae/config.json")
        again = load_reconstructor("vae:s3://models/demo/vae", cache_dir=str(cache), s3_endpoint=endpoint)
        assert again.fingerprint == recon.fingerprint  # served from the cache
        assert not list(cache.rglob(".partial-*"))
        with pytest.raises(WeightsNotFoundError, match="nothing found"):
            load_reconstructor("vae:s3://models/absent", cache_dir=str(cache), s3_endpoint=endpoint)
    finally:
        server.stop()
