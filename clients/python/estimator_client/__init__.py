# SPDX-License-Identifier: Apache-2.0
"""Python client of estimatord, over the C library libestimator_client.so (ctypes).

    from estimator_client import Client, spawn_daemon

    with spawn_daemon() as daemon:                       # a private estimatord
        client = Client(daemon.shm_name)
        est = client.estimate(["bpf_cpu_time_ms", "bpf_page_cache_hit"],
                              [[1200, 3], [80, 0]], source="rapl-sysfs",
                              output_type="AbsPower")
        est.components          # ['package', 'core', 'uncore', 'dram']
        est.powers              # rows x components (numpy float32 array, or lists)
        est.model["name"]       # the model that answered, with its error figures
        client.get_power(["bpf_cpu_time_ms", "bpf_page_cache_hit"], [[1200, 3]])

The library is loaded on first use (importing the package never fails for want of it):
$ESTIMATOR_CLIENT_LIBRARY when set, else libestimator_client.so.0 found by the dynamic
loader (LD_LIBRARY_PATH, then the ldconfig paths: /usr/local/lib after `cmake --install`
and `ldconfig`). Without it, the first Client or spawn_daemon raises EstimatorError
"unavailable: cannot load the estimator client library ...". numpy is optional: with it, matrices may be numpy
arrays (a C-contiguous float32 array is passed to the library without a copy; anything
else is converted once) and results are numpy arrays; without it, lists in and out.
Every failure raises EstimatorError, carrying the code and the daemon's message.
"""

import ctypes
import ctypes.util
import os

try:
    import numpy as _np
except ImportError:  # numpy is optional
    _np = None

# The project's version (CMakeLists.txt project()); pyproject.toml reads it from here and
# tests/integration/install_test.sh checks that the two agree.
__version__ = "0.1.0"

__all__ = [
    "Client", "Estimate", "EstimatorError", "SpawnedDaemon", "spawn_daemon", "library",
    "CODE_NAMES",
]

# The library's status codes (estimator_client.h); the values never change.
CODE_NAMES = {
    0: "ok", 1: "invalid_argument", 2: "not_found", 3: "missing_features",
    4: "invalid_value", 5: "too_large", 6: "incompatible", 7: "unavailable",
    8: "deadline_exceeded", 9: "resource_exhausted", 10: "internal",
    11: "permission_denied", 12: "integrity",
}
INVALID_ARGUMENT = 1


class EstimatorError(Exception):
    """A failed call: `code` (int), `code_name` ("missing_features", ...) and `message`."""

    def __init__(self, code, message):
        self.code = int(code)
        self.code_name = CODE_NAMES.get(self.code, "unknown")
        self.message = message
        super().__init__("%s: %s" % (self.code_name, message))


# ---- the C declarations (must match clients/c/estimator_client.h) ---------------------

_c_float_p = ctypes.POINTER(ctypes.c_float)
_c_double_p = ctypes.POINTER(ctypes.c_double)
_c_char_pp = ctypes.POINTER(ctypes.c_char_p)


class _Error(ctypes.Structure):
    _fields_ = [("code", ctypes.c_int), ("message", ctypes.c_char * 1024)]


class _ClientOptions(ctypes.Structure):
    _fields_ = [("shm_name", ctypes.c_char_p), ("timeout_ms", ctypes.c_uint32),
                ("spin_us", ctypes.c_uint32)]


class _NodePower(ctypes.Structure):
    _fields_ = [("component", ctypes.c_char_p), ("watts", _c_float_p),
                ("watts_count", ctypes.c_size_t), ("idle_watts", _c_float_p),
                ("idle_count", ctypes.c_size_t)]


class _SystemValue(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("value", ctypes.c_char_p)]


class _Request(ctypes.Structure):
    _fields_ = [("model_name", ctypes.c_char_p), ("trainer", ctypes.c_char_p),
                ("output_type", ctypes.c_char_p), ("source", ctypes.c_char_p),
                ("filter", ctypes.c_char_p), ("features", _c_char_pp),
                ("cols", ctypes.c_size_t), ("matrix", _c_float_p), ("rows", ctypes.c_size_t),
                ("node_power", ctypes.POINTER(_NodePower)),
                ("node_power_count", ctypes.c_size_t),
                ("system_values", ctypes.POINTER(_SystemValue)),
                ("system_value_count", ctypes.c_size_t), ("timeout_ms", ctypes.c_uint32)]


class _ModelInfo(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("trainer", ctypes.c_char_p),
                ("model_class", ctypes.c_char_p), ("output_type", ctypes.c_char_p),
                ("source", ctypes.c_char_p), ("mae", ctypes.c_double),
                ("mape", ctypes.c_double), ("core_ratio", ctypes.c_double)]


class _Measured(ctypes.Structure):
    _fields_ = [("core", _c_float_p), ("core_count", ctypes.c_size_t),
                ("dram", _c_float_p), ("dram_count", ctypes.c_size_t),
                ("gpu", _c_float_p), ("gpu_count", ctypes.c_size_t),
                ("other", _c_float_p), ("other_count", ctypes.c_size_t)]


class _DaemonOptions(ctypes.Structure):
    _fields_ = [("binary", ctypes.c_char_p), ("shm_name", ctypes.c_char_p),
                ("extra_args", _c_char_pp), ("extra_arg_count", ctypes.c_size_t),
                ("log_level", ctypes.c_char_p), ("start_timeout_ms", ctypes.c_uint32),
                ("stop_timeout_ms", ctypes.c_uint32)]


_SONAME = "libestimator_client.so.0"
_lib = None


def _declare(lib):
    vp = ctypes.c_void_p
    err = ctypes.POINTER(_Error)
    sigs = {
        "estimator_code_name": (ctypes.c_char_p, [ctypes.c_int]),
        "estimator_version": (ctypes.c_char_p, []),
        "estimator_client_create": (ctypes.c_int, [ctypes.POINTER(_ClientOptions),
                                                   ctypes.POINTER(vp), err]),
        "estimator_client_destroy": (None, [vp]),
        "estimator_client_shm_name": (ctypes.c_char_p, [vp]),
        "estimator_ping": (ctypes.c_int, [vp, ctypes.c_uint32, err]),
        "estimator_estimate": (ctypes.c_int, [vp, ctypes.POINTER(_Request),
                                              ctypes.POINTER(vp), err]),
        "estimator_reply_destroy": (None, [vp]),
        "estimator_reply_rows": (ctypes.c_size_t, [vp]),
        "estimator_reply_cols": (ctypes.c_size_t, [vp]),
        "estimator_reply_powers": (_c_float_p, [vp]),
        "estimator_reply_component": (ctypes.c_char_p, [vp, ctypes.c_size_t]),
        "estimator_reply_model": (_ModelInfo, [vp]),
        "estimator_get_power": (ctypes.c_int, [vp, ctypes.c_char_p, _c_char_pp,
                                               ctypes.c_size_t, _c_float_p, ctypes.c_size_t,
                                               ctypes.POINTER(_Measured), _c_double_p, err]),
        "estimator_daemon_spawn": (ctypes.c_int, [ctypes.POINTER(_DaemonOptions),
                                                  ctypes.POINTER(vp), err]),
        "estimator_daemon_shm_name": (ctypes.c_char_p, [vp]),
        "estimator_daemon_pid": (ctypes.c_int64, [vp]),
        "estimator_daemon_stop": (ctypes.c_int, [vp, ctypes.POINTER(ctypes.c_int), err]),
        "estimator_daemon_destroy": (None, [vp]),
    }
    for name, (restype, argtypes) in sigs.items():
        f = getattr(lib, name)
        f.restype = restype
        f.argtypes = argtypes


def library():
    """The loaded C library (loaded on first use)."""
    global _lib
    if _lib is not None:
        return _lib
    path = os.environ.get("ESTIMATOR_CLIENT_LIBRARY")
    candidates = [path] if path else [_SONAME, ctypes.util.find_library("estimator_client")]
    errors = []
    for candidate in candidates:
        if not candidate:
            continue
        try:
            lib = ctypes.CDLL(candidate)
            break
        except OSError as e:
            errors.append(str(e))
    else:
        where = "$ESTIMATOR_CLIENT_LIBRARY=%s" % path if path else \
            "%s on the loader's path (LD_LIBRARY_PATH, ldconfig)" % _SONAME
        raise EstimatorError(7, "cannot load the estimator client library from %s: %s"
                             % (where, "; ".join(errors) or "not found"))
    _declare(lib)
    _lib = lib
    return lib


def _check(code, err):
    if code != 0:
        raise EstimatorError(code, err.message.decode("utf-8", "replace"))


def _bytes(s):
    if s is None:
        return None
    return s.encode("utf-8") if isinstance(s, str) else bytes(s)


def _names(names):
    encoded = [_bytes(n) for n in names]
    arr = (ctypes.c_char_p * max(1, len(encoded)))(*encoded)
    return arr, len(encoded)


def _invalid(message):
    return EstimatorError(INVALID_ARGUMENT, message)


def _as_matrix(values, cols):
    """(float pointer, rows, keep-alive) for a rows x cols matrix.

    A C-contiguous float32 numpy array is passed as is; anything else is converted once.
    The keep-alive object owns the memory and must outlive the call."""
    if _np is not None and isinstance(values, _np.ndarray):
        arr = values
        if arr.ndim == 1 and cols > 0 and arr.size % cols == 0:
            arr = arr.reshape(-1, cols)  # a view: no copy
        if arr.ndim != 2:
            raise _invalid("values must be a 2-D matrix, got %d dimensions" % arr.ndim)
        if arr.dtype != _np.float32 or not arr.flags["C_CONTIGUOUS"]:
            arr = _np.ascontiguousarray(arr, dtype=_np.float32)
        if arr.shape[1] != cols:
            raise _invalid("values have %d columns but %d feature names"
                           % (arr.shape[1], cols))
        return arr.ctypes.data_as(_c_float_p), arr.shape[0], arr
    rows = list(values)
    for i, row in enumerate(rows):
        if len(row) != cols:
            raise _invalid("values[%d] has %d numbers but there are %d feature names"
                           % (i, len(row), cols))
    if _np is not None:
        try:
            arr = _np.asarray(rows, dtype=_np.float32).reshape(len(rows), cols)
        except (TypeError, ValueError) as e:
            raise _invalid("values are not numbers: %s" % e)
        return arr.ctypes.data_as(_c_float_p), len(rows), arr
    flat = (ctypes.c_float * max(1, len(rows) * cols))()
    k = 0
    for i, row in enumerate(rows):
        for j, v in enumerate(row):
            try:
                flat[k] = float(v)
            except (TypeError, ValueError):
                raise _invalid("values[%d][%d] is not a number: %r" % (i, j, v))
            k += 1
    return ctypes.cast(flat, _c_float_p), len(rows), flat


def _floats(values, what):
    """(pointer, count, keep-alive) of a 1-D list of watts; empty -> (None, 0, None)."""
    if values is None:
        return None, 0, None
    seq = list(values.ravel()) if _np is not None and isinstance(values, _np.ndarray) \
        else list(values)
    if not seq:
        return None, 0, None
    arr = (ctypes.c_float * len(seq))()
    for i, v in enumerate(seq):
        try:
            arr[i] = float(v)
        except (TypeError, ValueError):
            raise _invalid("%s[%d] is not a number: %r" % (what, i, v))
    return ctypes.cast(arr, _c_float_p), len(seq), arr


class Estimate:
    """An answer: `powers` (rows x components), `components` (names), `model` (dict)."""

    def __init__(self, powers, components, model):
        self.powers = powers
        self.components = components
        self.model = model

    def column(self, component):
        """The powers of one component, one per row."""
        c = self.components.index(component)
        if _np is not None and isinstance(self.powers, _np.ndarray):
            return self.powers[:, c]
        return [row[c] for row in self.powers]

    def __repr__(self):
        return "Estimate(model=%r, components=%r, rows=%d)" % (
            self.model.get("name"), self.components, len(self.powers))


class Client:
    """A client of the daemon serving `shm_name` (None: the daemon's default name).

    Does not contact the daemon until the first call; re-attaches by itself after a daemon
    restart. Safe to share between threads."""

    def __init__(self, shm_name=None, timeout_ms=1000, spin_us=0):
        lib = library()
        self._lib = lib
        self._handle = None
        opts = _ClientOptions(_bytes(shm_name), int(timeout_ms), int(spin_us))
        handle = ctypes.c_void_p()
        err = _Error()
        _check(lib.estimator_client_create(ctypes.byref(opts), ctypes.byref(handle),
                                           ctypes.byref(err)), err)
        self._handle = handle

    def close(self):
        if self._handle is not None:
            self._lib.estimator_client_destroy(self._handle)
            self._handle = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        # __init__ may have raised before _handle existed (no library): nothing to release.
        if getattr(self, "_handle", None) is not None:
            self.close()

    def _live(self):
        if self._handle is None:
            raise _invalid("the client is closed")
        return self._handle

    @property
    def shm_name(self):
        return self._lib.estimator_client_shm_name(self._live()).decode()

    def ping(self, timeout_ms=0):
        """Returns when a daemon answers; raises EstimatorError (unavailable, ...) otherwise."""
        err = _Error()
        _check(self._lib.estimator_ping(self._live(), int(timeout_ms), ctypes.byref(err)), err)

    def estimate(self, features, rows, model_name=None, trainer=None, output_type=None,
                 source=None, filter=None, node_power=None, system_values=None,
                 timeout_ms=0):
        """Power of every row per component.

        features: the column names; rows: the matrix (list of rows or a numpy array).
        node_power: {component: [watts per CPU package]} measured on the node.
        system_values: {name: value}, e.g. {"cpu_architecture": "Sky Lake"}."""
        features = list(features)
        names, cols = _names(features)
        matrix, nrows, keep = _as_matrix(rows, cols)
        req = _Request()
        req.model_name = _bytes(model_name)
        req.trainer = _bytes(trainer)
        req.output_type = _bytes(output_type)
        req.source = _bytes(source)
        req.filter = _bytes(filter)
        req.features = names
        req.cols = cols
        req.matrix = matrix
        req.rows = nrows
        req.timeout_ms = int(timeout_ms)
        keep_power = []
        if node_power:
            nps = (_NodePower * len(node_power))()
            for i, (component, watts) in enumerate(node_power.items()):
                p, n, k = _floats(watts, "node_power[%s]" % component)
                keep_power.append(k)
                nps[i] = _NodePower(_bytes(component), p, n, None, 0)
            req.node_power = nps
            req.node_power_count = len(node_power)
            keep_power.append(nps)
        if system_values:
            svs = (_SystemValue * len(system_values))()
            for i, (name, value) in enumerate(system_values.items()):
                svs[i] = _SystemValue(_bytes(name), _bytes(str(value)))
            req.system_values = svs
            req.system_value_count = len(system_values)
            keep_power.append(svs)

        reply = ctypes.c_void_p()
        err = _Error()
        code = self._lib.estimator_estimate(self._live(), ctypes.byref(req), ctypes.byref(reply),
                                            ctypes.byref(err))
        del keep, keep_power  # the library read them during the call and kept nothing
        _check(code, err)
        lib = self._lib
        try:
            r, c = lib.estimator_reply_rows(reply), lib.estimator_reply_cols(reply)
            components = [lib.estimator_reply_component(reply, j).decode() for j in range(c)]
            ptr = lib.estimator_reply_powers(reply)
            if _np is not None:
                powers = _np.ctypeslib.as_array(ptr, shape=(r, c)).copy() if r * c else \
                    _np.zeros((r, c), dtype=_np.float32)
            else:
                powers = [[ptr[i * c + j] for j in range(c)] for i in range(r)]
            m = lib.estimator_reply_model(reply)
            model = {
                "name": m.name.decode(), "trainer": m.trainer.decode(),
                "model_class": m.model_class.decode(), "output_type": m.output_type.decode(),
                "source": m.source.decode(), "mae": m.mae, "mape": m.mape,
                "core_ratio": m.core_ratio,
            }
        finally:
            lib.estimator_reply_destroy(reply)
        return Estimate(powers, components, model)

    def get_power(self, features, rows, model_name="", core_power=(), dram_power=(),
                  gpu_power=(), other_power=()):
        """Kepler's 2022 GetPower: one total power in watts per row.

        The measured powers (one value per CPU package, empty when not measured) become
        the request's node power (components core, dram, gpu, other). An empty model name
        selects the smallest-error model that fits. Returns a numpy float64 array, or a
        list without numpy."""
        features = list(features)
        names, cols = _names(features)
        matrix, nrows, keep = _as_matrix(rows, cols)
        core = _floats(core_power, "core_power")
        dram = _floats(dram_power, "dram_power")
        gpu = _floats(gpu_power, "gpu_power")
        other = _floats(other_power, "other_power")
        measured = _Measured(core[0], core[1], dram[0], dram[1], gpu[0], gpu[1],
                             other[0], other[1])
        out = (ctypes.c_double * max(1, nrows))()
        err = _Error()
        code = self._lib.estimator_get_power(self._live(), _bytes(model_name or ""), names, cols,
                                             matrix, nrows, ctypes.byref(measured), out,
                                             ctypes.byref(err))
        del keep, core, dram, gpu, other
        _check(code, err)
        if _np is not None:
            return _np.array(out[:nrows], dtype=_np.float64)
        return list(out[:nrows])


class SpawnedDaemon:
    """A private estimatord, child of this process; stopped by stop(), at the end of a
    `with` block, or when this process dies (the kernel sends it SIGTERM)."""

    def __init__(self, binary=None, shm_name=None, extra_args=(), log_level=None,
                 start_timeout_ms=0, stop_timeout_ms=0):
        lib = library()
        self._lib = lib
        self._handle = None
        args, nargs = _names(list(extra_args))
        opts = _DaemonOptions(_bytes(binary), _bytes(shm_name), args, nargs, _bytes(log_level),
                              int(start_timeout_ms), int(stop_timeout_ms))
        handle = ctypes.c_void_p()
        err = _Error()
        _check(lib.estimator_daemon_spawn(ctypes.byref(opts), ctypes.byref(handle),
                                          ctypes.byref(err)), err)
        self._handle = handle
        self.shm_name = lib.estimator_daemon_shm_name(handle).decode()
        self.wait_status = None

    @property
    def pid(self):
        """The daemon's pid, or None once stopped."""
        if self._handle is None:
            return None
        pid = self._lib.estimator_daemon_pid(self._handle)
        return None if pid < 0 else pid

    def client(self, timeout_ms=1000):
        return Client(self.shm_name, timeout_ms=timeout_ms)

    def stop(self):
        """Stops the daemon (SIGTERM, then SIGKILL after the stop timeout); returns its wait
        status as os.waitpid reports it (os.waitstatus_to_exitcode decodes it)."""
        if self._handle is None:
            return self.wait_status
        status = ctypes.c_int(-1)
        err = _Error()
        code = self._lib.estimator_daemon_stop(self._handle, ctypes.byref(status),
                                               ctypes.byref(err))
        self._lib.estimator_daemon_destroy(self._handle)
        self._handle = None
        _check(code, err)
        self.wait_status = status.value
        return self.wait_status

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def __del__(self):
        if getattr(self, "_handle", None) is not None:
            self._lib.estimator_daemon_destroy(self._handle)
            self._handle = None


def spawn_daemon(binary=None, shm_name=None, extra_args=(), log_level=None,
                 start_timeout_ms=0, stop_timeout_ms=0):
    """Starts a private estimatord (binary: path, else $ESTIMATORD, next to the Python
    executable, then $PATH) and returns it once it answers; use it as a context manager."""
    return SpawnedDaemon(binary, shm_name, extra_args, log_level, start_timeout_ms,
                         stop_timeout_ms)
