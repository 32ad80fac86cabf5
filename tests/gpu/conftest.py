import pytest

from helpers import cuda_available


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        item.add_marker(pytest.mark.gpu)
        if not cuda_available():
            item.add_marker(skip)
