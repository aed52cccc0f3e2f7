"""Shared by the model tests."""
import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """Small tensors: one thread is as fast as two, and immune to the OpenMP stalls (30x and
    more) that two threads suffer when other processes share the 2 cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
