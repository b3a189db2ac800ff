import pytest
import torch


@pytest.fixture()
def one_thread():
    """Torch on one thread: bit-for-bit comparisons between runs need the same thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
