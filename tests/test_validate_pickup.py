"""The replay's engine pickup: back-to-back submissions enter the transformers CB engine together."""

from __future__ import annotations

import sys

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from calibrate.validate import SUBMIT_NO_SLEEP_S, engine_pickup_s


def test_a_burst_added_in_one_loop_is_picked_up_at_its_last_arrival():
    burst = np.array([1.6e-5, 3e-5, 4.5e-5, 5.8e-5])  # 16 µs apart: the submitter never sleeps
    assert np.all(engine_pickup_s(burst, "transformers") == 5.8e-5)


def test_spaced_arrivals_and_other_backends_are_kept():
    spaced = np.array([0.0, 0.2, 0.2003, 0.9])  # the middle two are one chain
    assert engine_pickup_s(spaced, "transformers").tolist() == [0.0, 0.2003, 0.2003, 0.9]
    burst = np.array([0.0, 1e-5, 2e-5])
    assert engine_pickup_s(burst, "vllm") is burst


@settings(max_examples=80, deadline=None)
@given(st.lists(st.floats(0.0, 0.002), min_size=1, max_size=60))
def test_pickup_is_never_before_arrival_nor_later_than_one_switch_interval(gaps):
    arrival = np.cumsum(gaps)
    pickup = engine_pickup_s(arrival, "transformers")
    assert np.all(pickup >= arrival)
    assert np.all(pickup - arrival < sys.getswitchinterval() + SUBMIT_NO_SLEEP_S)
    assert np.all(np.diff(pickup) >= 0)  # order kept
