# SPDX-License-Identifier: Apache-2.0
"""The Python client (clients/python, ctypes over libestimator_client.so) against a real
estimatord that the client itself spawns. Expected powers come from the embedded model's
published weights (data/model), evaluated here with Kepler's formula.

Run by ctest with /usr/bin/python3 and ESTIMATOR_CLIENT_LIBRARY, ESTIMATORD and
PYTHONPATH set (tests/CMakeLists.txt)."""

import json
import os
import subprocess
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
WEIGHTS = os.path.join(ROOT, "data", "model", "rapl-sysfs", "AbsPower", "SGDRegressorTrainer_0",
                       "weights.json")
BPF = ["bpf_cpu_time_ms", "bpf_page_cache_hit"]

for var in ("ESTIMATOR_CLIENT_LIBRARY", "ESTIMATORD"):
    if not os.environ.get(var):
        print("SKIP: %s is not set (run through ctest)" % var)
        sys.exit(77)

import estimator_client as ec  # noqa: E402

try:
    import numpy as np
except ImportError:
    np = None


def kepler_weight_power(component, row):
    """Kepler's weight-model formula for one component of the embedded rapl model."""
    with open(WEIGHTS) as f:
        w = json.load(f)[component]["All_Weights"]
    p = w["Bias_Weight"]
    for name, value in zip(BPF, row):
        v = w["Numerical_Variables"][name]
        if v["scale"] != 0:
            p += v["weight"] * value / v["scale"]
    return max(p, 0.0)


class PythonClient(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.daemon = ec.spawn_daemon()
        cls.client = ec.Client(cls.daemon.shm_name, timeout_ms=2000)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        cls.daemon.stop()

    def test_estimate_from_lists(self):
        rows = [[1200, 3], [80, 0], [0, 0]]
        est = self.client.estimate(BPF, rows, output_type="AbsPower", source="rapl-sysfs")
        self.assertEqual(est.components, ["package", "core", "uncore", "dram"])
        self.assertEqual(est.model["name"], "SGDRegressorTrainer_0")
        self.assertEqual(est.model["source"], "rapl-sysfs")
        self.assertAlmostEqual(est.model["mae"], 60.78)
        self.assertEqual(len(est.powers), 3)
        for r, row in enumerate(rows):
            for c, comp in enumerate(est.components):
                want = kepler_weight_power(comp, row)
                self.assertAlmostEqual(float(est.powers[r][c]), want, delta=1e-5 * max(1, want))
        self.assertEqual(len(est.column("dram")), 3)

    @unittest.skipIf(np is None, "numpy is not installed")
    def test_estimate_from_numpy_gives_numpy(self):
        x = np.array([[1200, 3], [80, 0]], dtype=np.float32)
        est = self.client.estimate(BPF, x, output_type="AbsPower", source="intel_rapl")
        self.assertIsInstance(est.powers, np.ndarray)
        self.assertEqual(est.powers.shape, (2, 4))
        self.assertEqual(est.powers.dtype, np.float32)
        self.assertAlmostEqual(float(est.powers[0, 0]), kepler_weight_power("package", [1200, 3]),
                               places=3)
        # float64, non-contiguous and Fortran-ordered inputs give the same answer.
        wide = np.array([[1200, 99, 3], [80, 99, 0]], dtype=np.float64)[:, [0, 2]]
        for variant in (x.astype(np.float64), np.asfortranarray(x), wide, x.ravel()):
            other = self.client.estimate(BPF, variant, output_type="AbsPower", source="rapl-sysfs")
            np.testing.assert_array_equal(other.powers, est.powers)

    @unittest.skipIf(np is None, "numpy is not installed")
    def test_float32_c_contiguous_matrix_is_not_copied(self):
        x = np.zeros((4, 2), dtype=np.float32)
        ptr, rows, keep = ec._as_matrix(x, 2)
        self.assertIs(keep, x)
        self.assertEqual(rows, 4)
        self.assertEqual(ec.ctypes.addressof(ptr.contents), x.ctypes.data)
        for converted in (x.astype(np.float64), x[::2], np.asfortranarray(np.zeros((3, 2), np.float32))):
            _, _, keep = ec._as_matrix(converted, 2)
            self.assertIsNot(keep, converted)
            self.assertEqual(keep.dtype, np.float32)
            self.assertTrue(keep.flags["C_CONTIGUOUS"])

    def test_get_power_is_package_plus_dram(self):
        rows = [[1200, 3], [80, 0]]
        got = self.client.get_power(BPF, rows)
        self.assertEqual(len(got), 2)
        for r, row in enumerate(rows):
            want = kepler_weight_power("package", row) + kepler_weight_power("dram", row)
            self.assertAlmostEqual(float(got[r]), want, delta=1e-4)
        if np is not None:
            self.assertIsInstance(got, np.ndarray)
            self.assertEqual(got.dtype, np.float64)

    def test_get_power_with_measured_power_on_the_ratio_model(self):
        features = ["cpu_instructions", "cache_miss", "bpf_cpu_time_ms"]
        rows = [[300, 10, 5], [100, 30, 15]]
        # Only dram is measured: it is split by cache misses, 10 : 30 of 8 W.
        got = self.client.get_power(features, rows, model_name="Ratio", dram_power=[8.0])
        self.assertAlmostEqual(float(got[0]), 2.0, places=5)
        self.assertAlmostEqual(float(got[1]), 6.0, places=5)
        with self.assertRaises(ec.EstimatorError) as cm:
            self.client.get_power(features, rows, model_name="Ratio")
        self.assertIn("node power", cm.exception.message)

    def test_errors_carry_code_and_message(self):
        with self.assertRaises(ec.EstimatorError) as cm:
            self.client.estimate(["cpu_cycles"], [[1]], model_name="SGDRegressorTrainer_0",
                                 output_type="AbsPower", source="rapl-sysfs")
        e = cm.exception
        self.assertEqual(e.code, 3)
        self.assertEqual(e.code_name, "missing_features")
        self.assertIn("bpf_cpu_time_ms", e.message)
        self.assertIn("missing_features", str(e))

        with self.assertRaises(ec.EstimatorError) as cm:
            self.client.estimate(BPF, [[1, 2], [3]])
        self.assertEqual(cm.exception.code_name, "invalid_argument")
        self.assertIn("values[1] has 1 numbers", cm.exception.message)

        with self.assertRaises(ec.EstimatorError) as cm:
            self.client.get_power(BPF, [[1, "x"]])
        self.assertEqual(cm.exception.code_name, "invalid_argument")

        with self.assertRaises(ec.EstimatorError) as cm:
            self.client.estimate(BPF, [[float("nan"), 1]])
        self.assertEqual(cm.exception.code_name, "invalid_value")

        nobody = ec.Client("estimator-py-nobody-%d" % os.getpid(), timeout_ms=200)
        with self.assertRaises(ec.EstimatorError) as cm:
            nobody.ping()
        self.assertEqual(cm.exception.code_name, "unavailable")
        self.assertIn("estimator unavailable", cm.exception.message)

    def test_without_numpy_results_are_lists(self):
        code = (
            "import sys, json\n"
            "sys.modules['numpy'] = None\n"  # makes `import numpy` fail
            "import estimator_client as ec\n"
            "assert ec._np is None\n"
            "c = ec.Client(%r)\n"
            "est = c.estimate(%r, [[1200, 3], [80, 0]], source='rapl-sysfs', output_type='AbsPower')\n"
            "p = c.get_power(%r, [[1200, 3]])\n"
            "print(json.dumps({'powers': est.powers, 'total': p, 'types': [type(est.powers).__name__, type(p).__name__]}))\n"
        ) % (self.daemon.shm_name, BPF, BPF)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        got = json.loads(out.stdout)
        self.assertEqual(got["types"], ["list", "list"])
        self.assertAlmostEqual(got["powers"][0][0], kepler_weight_power("package", [1200, 3]),
                               places=3)
        self.assertAlmostEqual(got["total"][0], kepler_weight_power("package", [1200, 3])
                               + kepler_weight_power("dram", [1200, 3]), places=3)


class SpawnedDaemonContext(unittest.TestCase):
    def test_context_manager_starts_and_stops_a_private_daemon(self):
        with ec.spawn_daemon() as d:
            name = d.shm_name
            self.assertTrue(name.startswith("estimator-spawned-"))
            self.assertIsNotNone(d.pid)
            self.assertTrue(os.path.exists("/dev/shm/" + name))
            with d.client() as c:
                c.ping()
                self.assertEqual(c.shm_name, name)
        self.assertIsNone(d.pid)
        self.assertEqual(os.waitstatus_to_exitcode(d.wait_status), 0)
        self.assertFalse(os.path.exists("/dev/shm/" + name))

    def test_spawn_failures_raise(self):
        with self.assertRaises(ec.EstimatorError) as cm:
            ec.spawn_daemon(binary="/nonexistent/estimatord")
        self.assertEqual(cm.exception.code_name, "not_found")
        self.assertIn("/nonexistent/estimatord", cm.exception.message)
        with self.assertRaises(ec.EstimatorError) as cm:
            ec.spawn_daemon(extra_args=["--model-dir", "/nonexistent"], log_level="off")
        self.assertEqual(cm.exception.code_name, "unavailable")
        self.assertIn("exited with status 2", cm.exception.message)


if __name__ == "__main__":
    unittest.main()
