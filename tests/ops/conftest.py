import pytest


@pytest.fixture
def backends():
    """``ops.set_backends`` (the one switch of the optional backends, fla and Triton) for one
    test; the settings before it come back after it."""
    from fairseq_t2r.ops import dispatch

    before = dispatch.set_backends()
    yield dispatch.set_backends
    dispatch.set_backends(**before)
