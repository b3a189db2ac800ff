import pytest
import torch

# The small phantom several test modules share (written once per session): 12 patients, one
# without a SEG and one without expression, at a 96-voxel matrix.
PHANTOM_PATIENTS, PHANTOM_MATRIX, PHANTOM_SEED = 12, 96, 3


@pytest.fixture()
def one_thread():
    """Torch on one thread: bit-for-bit comparisons between runs need the same thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def small_phantom(tmp_path_factory):
    """``(root, summary)`` of the shared phantom; copy the folder before changing anything."""
    from radiolib.data import phantom

    root = tmp_path_factory.mktemp("phantom")
    summary = phantom.write_phantom(
        root,
        patients=PHANTOM_PATIENTS,
        seed=PHANTOM_SEED,
        matrix=PHANTOM_MATRIX,
        progress=False,
    )
    return root, summary
