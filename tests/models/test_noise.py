"""The noise key: secret by default, a public seed only when asked for."""

import random

import pytest

from pipeline.models.noise import NoiseKey, seed_for_key
from pipeline.sanitize.config import NOISE_KEY_VARIABLE, SanitizeConfig


def test_a_secret_keys_every_sample_and_only_its_holder_can_compute_the_seeds():
    key = NoiseKey.fresh()
    assert key.sample_seed("s001", b"pixels") == key.sample_seed("s001", b"pixels")  # the same draws within a run
    assert key.sample_seed("s001", b"pixels") != key.sample_seed("s002", b"pixels")
    assert key.sample_seed("s001", b"pixels") != key.sample_seed("s001", b"other pixels")  # content is part of it
    assert key.sample_seed("s001", b"pixels") != NoiseKey.fresh().sample_seed("s001", b"pixels")  # another run, other draws
    # What an attacker who reads the code can compute is the public seed's, which a secret run never uses.
    assert key.sample_seed("s001", b"pixels") not in {seed_for_key(seed, "s001") for seed in range(100)}
    assert 0 <= key.sample_seed("\udcff-not-utf8", b"") < 2**63


def test_the_secret_never_shows_and_its_fingerprint_tells_keys_apart(tmp_path):
    path = tmp_path / "key"
    path.write_bytes(random.Random(1).randbytes(32))
    key = NoiseKey.from_file(str(path))
    assert key.secret.hex() not in repr(key) and str(key.secret) not in repr(key)
    assert key.fingerprint == NoiseKey.from_file(str(path)).fingerprint != NoiseKey.fresh().fingerprint
    assert key.secret.hex()[:16] not in key.fingerprint
    assert key.describe() == {"source": f"the key file {path}", "fingerprint": key.fingerprint}
    (tmp_path / "short").write_bytes(b"0123456789")
    with pytest.raises(ValueError, match="at least 16 bytes"):
        NoiseKey.from_file(str(tmp_path / "short"))


def test_a_public_seed_draws_as_runs_did_before_keys():
    public = NoiseKey.public(7)
    assert public.public_seed and public.fingerprint == "public-seed-7"
    assert public.sample_seed("s001", b"any pixels") == seed_for_key(7, "s001")


def test_the_config_picks_the_key(tmp_path, monkeypatch):
    monkeypatch.delenv(NOISE_KEY_VARIABLE, raising=False)
    default = SanitizeConfig.resolve()
    assert not default.noise_key().public_seed and default.noise_key().fingerprint != default.noise_key().fingerprint  # fresh each run
    assert SanitizeConfig.resolve(seed=3).noise_key() == NoiseKey.public(3)
    path = tmp_path / "key"
    key = random.Random(0).randbytes(32)  # seeded: random bytes begin or end with whitespace 1 run in 20
    assert key.strip() == key
    path.write_bytes(key + b"\n")  # as an editor saves it: the surrounding whitespace is not part of the key
    from_file = SanitizeConfig.resolve({"noise-key-file": str(path)}).noise_key()
    assert from_file.secret == key
    monkeypatch.setenv(NOISE_KEY_VARIABLE, str(path))
    assert SanitizeConfig.resolve().noise_key().secret == key
    with pytest.raises(ValueError, match="not both"):
        SanitizeConfig.resolve({"noise-key-file": str(path), "seed": 1})
