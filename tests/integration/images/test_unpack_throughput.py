"""Unpack throughput against ``tar -x`` on the same layer (numbers printed; run with -s to see them).

The bound is loose on purpose: the machine is shared and small. The benchmark proper (bigger
layer, several runs) is ``python -m tests.integration.images.unpack_throughput``.
"""

from __future__ import annotations

import shutil

from tests.integration.images.unpack_throughput import measure

RATIO_BOUND = 6.0


def test_unpack_is_within_a_small_factor_of_tar() -> None:
    assert shutil.which("tar"), "tar is missing: apt-get install tar"
    result = measure(megabytes=12, runs=2)
    print(f"\nunpack throughput: ours {result['ours_s']:.3f}s, tar -x {result['tar_s']:.3f}s, {result['ratio']:.2f}x")
    assert result["ratio"] < RATIO_BOUND, result
