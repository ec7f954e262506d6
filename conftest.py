import pytest

from kubetune.embedded.tiny_model import write_tiny_model


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """The embedded tiny model, generated once per test session (offline, about a second)."""
    return write_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama")
