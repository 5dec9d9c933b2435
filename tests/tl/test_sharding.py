"""The solve and its outputs split over several JAX devices give the one-device results.

A CPU JAX fixes its device count at start-up, so the runs on several devices are subprocesses
(``XLA_FLAGS=--xla_force_host_platform_device_count=N``) of tests/sharding_worker.py: one
process with 4 CPU devices solving on 1 and 3 of them, and two processes of one device each
joined by ``jax.distributed.initialize`` on loopback (CPU collectives over gloo), solving on
both. The problem has 101 x 87 cells, a multiple of neither 2 nor 3, so every split pads.
Everything is float64; the potentials and the outputs' sums must agree with one device to 1e-9
(absolute; they differ by float64 round-off, about 1e-16, because the sums are taken in
another order), the iteration counts and modes exactly. The dense plan built in numpy from
the potentials of the split runs checks the outputs' sums independently.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
import sharding_worker as worker

import pairot as pr
from pairot.tl._ot import sinkhorn

WORKER = Path(worker.__file__)
#: this checkout's pairot, for the subprocesses
SOURCE = Path(pr.__file__).resolve().parents[1]
ATOL = 1e-9
TIMEOUT = 600
#: The one-device reference of every configuration (the chunked ones are compared with their
#: unchunked one-device runs: chunks change the order of the sums only).
REFERENCE = {"log_chunked": "log", "kernel_chunked": "kernel"}
#: The configurations of the two-process run (one CPU device each).
TWO_PROCESSES = ("log", "log_plain", "kernel", "sparse")


def _env(n_devices: int) -> dict:
    env = dict(os.environ)
    flags = env.get("XLA_FLAGS", "")
    env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={n_devices}".strip()
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SOURCE), env.get("PYTHONPATH")) if p)
    return env


def _run(args: list[str], n_devices: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(WORKER), *args],
        env=_env(n_devices),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


@pytest.fixture(scope="module")
def four_devices(tmp_path_factory):
    """Every configuration on 3 of 4 CPU devices, and the one-device references."""
    out = tmp_path_factory.mktemp("sharding") / "four.npz"
    ones = ",".join(c for c in worker.CONFIGS if c not in REFERENCE)
    done = _run([str(out), "--runs", f"1:{ones}", "3:all", "--dataset-map", "1", "4"], 4)
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(np.load(out))


def _dense_sums(f, g):
    """The outputs' sums from the dense plan ``exp((f + g - C) / eps)``, in numpy."""
    x, y, offset, _, _, qc, rc, cost = worker.problem()
    plan = np.exp((f[:, None] + g[None, :] - cost) / worker.EPS)
    kq, kr = worker.LABELS.shape
    rows = np.eye(kq)[qc].T  # clusters x cells
    cols = np.eye(kr)[rc]
    return {
        "row_mass": plan.sum(axis=1),
        "col_mass": plan.sum(axis=0),
        "tm": rows @ plan,
        "mass": rows @ plan @ cols,
        "cost_mass": rows @ (plan * cost) @ cols,
        "row_cluster": plan @ cols,
    }


def _assert_same(results, config, count, reference, where):
    one = f"{REFERENCE.get(config, config)}/1/"
    key = f"{config}/{count}/"
    assert int(results[key + "n_devices"]) == count, where
    for name in ("n_iterations", "n_corrections", "mode", "sparse", "converged"):
        assert results[key + name] == reference[one + name], (where, name)
    assert bool(results[key + "converged"]) is (config != "log_plain"), where
    for name in ("f", "g"):
        np.testing.assert_allclose(
            results[key + name], reference[one + name], rtol=0, atol=ATOL, err_msg=where
        )
    sums = [k[len(key) :] for k in results if k.startswith(key + "sums_")]
    assert len(sums) == 7, sums  # tm, mass, cost_mass, cost_sum, row_mass, col_mass, row_cluster
    for name in sums:
        np.testing.assert_allclose(
            results[key + name],
            reference[one + name],
            rtol=0,
            atol=ATOL,
            err_msg=f"{where}: {name}",
        )


@pytest.mark.parametrize("config", list(worker.CONFIGS))
def test_split_solve_equals_one_device(four_devices, config):
    _assert_same(four_devices, config, 3, four_devices, f"{config} on 3 devices")


@pytest.mark.parametrize("config", ["log", "kernel", "kernel_relaxed"])
def test_split_outputs_equal_the_dense_plan(four_devices, config):
    """The split aggregation against the plan built in numpy from the same potentials (the
    dense configurations: the active-block mode leaves out blocks on purpose)."""
    key = f"{config}/3/"
    dense = _dense_sums(four_devices[key + "f"], four_devices[key + "g"])
    for name, expected in dense.items():
        np.testing.assert_allclose(
            four_devices[key + "sums_" + name], expected, rtol=1e-10, atol=1e-14, err_msg=name
        )
    if config != "kernel_relaxed":  # balanced: the plan's marginals are a and b
        _, _, _, a, b = worker.problem()[:5]
        assert np.abs(dense["row_mass"] - a).sum() + np.abs(dense["col_mass"] - b).sum() < 1e-5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(
    not hasattr(jax.config, "jax_cpu_collectives_implementation"),
    reason="this JAX build has no CPU collectives for jax.distributed",
)
def test_dataset_map_on_four_devices_equals_one(four_devices):
    """``DatasetMap.solve(devices=jax.devices()[:4])`` (float32, kernel mode, 203 x 181
    cells: padded on 4 devices): the potentials, mappings and distance of one device, to
    float32 round-off (1e-6)."""
    one, four = "dataset_map/1/", "dataset_map/4/"
    assert int(four_devices[one + "n_devices"]) == 1
    assert int(four_devices[four + "n_devices"]) == 4
    assert four_devices[one + "n_iterations"] == four_devices[four + "n_iterations"]
    names = ["f", "g", "distance"] + [
        f"mapping_{m}" for m in ("mean", "jensen_shannon", "transported_mass")
    ]
    for name in names:
        np.testing.assert_allclose(
            four_devices[four + name], four_devices[one + name], rtol=0, atol=1e-6, err_msg=name
        )
    assert np.ptp(four_devices[one + "mapping_mean"]) > 0.1  # a mapping with contrast


def test_two_processes_equal_one_device(four_devices, tmp_path):
    """Two processes of one CPU device each, one mesh over both (the multi-host recipe of
    docs/method.md on one machine), give the one-device results."""
    address = f"127.0.0.1:{_free_port()}"
    configs = ",".join(TWO_PROCESSES)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                str(tmp_path / f"p{i}.npz"),
                "--runs",
                f"2:{configs}",
                "--coordinator",
                address,
                "--processes",
                "2",
                "--process-id",
                str(i),
            ],
            env=_env(1),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    try:
        outputs = [p.communicate(timeout=TIMEOUT) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
    for i in range(2):
        results = dict(np.load(tmp_path / f"p{i}.npz"))
        assert int(results["process_count"]) == 2 and int(results["device_count"]) == 2
        for config in TWO_PROCESSES:
            _assert_same(results, config, 2, four_devices, f"process {i}, {config}")


def test_one_device_is_the_single_device_code():
    """A list of one device runs the code of ``devices=None`` on a one-device machine: the
    same numbers to the last bit, and ``n_devices`` 1."""
    if len(jax.devices()) != 1:
        pytest.skip(
            f"this machine has {len(jax.devices())} jax devices, so devices=None runs the "
            "sharded code (compared with one device in the subprocess tests above)"
        )
    problem = worker.problem()
    x, y, offset, a, b, qc, rc = problem[:7]
    options = {"epsilon": worker.EPS, "dtype": np.float64, "progress": False}
    options |= {"query_codes": qc, "ref_codes": rc, "batch_size": 16}
    default = sinkhorn(x, y, offset, a, b, **options)
    listed = sinkhorn(x, y, offset, a, b, devices=jax.devices()[:1], **options)
    assert default.n_devices == listed.n_devices == 1
    np.testing.assert_array_equal(default.f, listed.f)
    np.testing.assert_array_equal(default.g, listed.g)
    assert "devices" not in repr(listed)


@pytest.mark.parametrize(
    ("devices", "error", "message"),
    [
        ("gpu", TypeError, r"devices must be None or a list of jax devices, got str"),
        (jax.devices()[0], TypeError, r"got the single device"),
        ([0], TypeError, r"devices must hold jax devices only, got 0"),
        ([], ValueError, r"devices must not be empty"),
        ([jax.devices()[0]] * 2, ValueError, r"devices must not repeat a device"),
    ],
)
def test_bad_devices_are_refused(devices, error, message):
    x, y, offset, a, b = worker.problem()[:5]
    with pytest.raises(error, match=message) as info:
        sinkhorn(x, y, offset, a, b, epsilon=worker.EPS, progress=False, devices=devices)
    assert "jax.devices()[:2]" in str(info.value) or "once" in str(info.value)
