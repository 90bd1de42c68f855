#!/usr/bin/python3
"""Checks of deploy/: the Kubernetes manifests agree with each other and with estimatord's
options, the Dockerfile has the stages the image needs, and the runtime collected by
deploy/collect-runtime.sh runs (through its own loader, and inside a chroot of it when the
test runs as root), giving the expected image size.

Run from ctest with /usr/bin/python3 (python3-yaml). Environment:
  ESTIMATOR_SOURCE_DIR  the repository root (default: two levels above this file)
  ESTIMATORD, ESTIMATOR_CLI  the built programs (the runtime checks skip without them)
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

try:
    import yaml
except ImportError:  # ctest maps exit code 77 to "skipped"
    print("SKIP: python3-yaml is not installed (apt-get install python3-yaml)")
    sys.exit(77)

ROOT = os.environ.get("ESTIMATOR_SOURCE_DIR") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", ".."))
DEPLOY = os.path.join(ROOT, "deploy")
SIDECAR = os.path.join(DEPLOY, "kubernetes", "kepler-sidecar")
ESTIMATORD = os.environ.get("ESTIMATORD", "")
ESTIMATOR_CLI = os.environ.get("ESTIMATOR_CLI", "")

KEPLER_SOCKET = "/tmp/estimator.sock"  # KEPLER.md section 4
MIB = 1024 * 1024


def quantity_bytes(q):
    units = {"Ki": 1024, "Mi": MIB, "Gi": 1024 * MIB, "K": 1000, "M": 1000**2, "G": 1000**3}
    m = re.fullmatch(r"(\d+)([KMG]i?)?", str(q))
    if not m:
        raise ValueError("not a memory quantity: %r" % q)
    return int(m.group(1)) * units.get(m.group(2) or "", 1)


def quantity_millicpu(q):
    q = str(q)
    return int(q[:-1]) if q.endswith("m") else int(float(q) * 1000)


def args_map(args):
    """--key=value and --key value forms into a dict (flags map to True)."""
    out = {}
    i = 0
    while i < len(args):
        a = args[i]
        if not a.startswith("--"):
            raise AssertionError("positional argument %r" % a)
        if "=" in a:
            k, v = a.split("=", 1)
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            k, v = a, args[i + 1]
            i += 1
        else:
            k, v = a, True
        out[k] = v
        i += 1
    return out


def load_all_yaml():
    docs = {}
    for dirpath, _, files in os.walk(DEPLOY):
        for f in files:
            if f.endswith((".yaml", ".yml")):
                path = os.path.join(dirpath, f)
                with open(path) as fh:
                    docs[path] = [d for d in yaml.safe_load_all(fh) if d is not None]
    return docs


def estimatord_options():
    """The long options estimatord --help lists, or None without the binary."""
    if not ESTIMATORD or not os.access(ESTIMATORD, os.X_OK):
        return None
    out = subprocess.run([ESTIMATORD, "--help"], capture_output=True, text=True, timeout=30)
    return set(re.findall(r"(--[a-z][a-z0-9-]*)", out.stdout))


class ManifestTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.docs = load_all_yaml()
        with open(os.path.join(SIDECAR, "kustomization.yaml")) as fh:
            cls.kustomization = yaml.safe_load(fh)
        with open(os.path.join(SIDECAR, "estimator-sidecar.yaml")) as fh:
            cls.patch = yaml.safe_load(fh)
        spec = cls.patch["spec"]["template"]["spec"]
        cls.pod = spec
        cls.containers = {c["name"]: c for c in spec["containers"]}
        cls.volumes = {v["name"]: v for v in spec["volumes"]}
        cls.estimator = cls.containers["estimator"]
        cls.args = args_map(cls.estimator["args"])

    def test_every_yaml_file_parses_into_kubernetes_objects(self):
        self.assertGreaterEqual(len(self.docs), 3, sorted(self.docs))
        for path, docs in self.docs.items():
            self.assertTrue(docs, "%s is empty" % path)
            for d in docs:
                self.assertIsInstance(d, dict, path)
                self.assertIn("apiVersion", d, path)
                self.assertIn("kind", d, path)

    def test_kustomization_patches_keplers_daemonset_with_files_that_exist(self):
        k = self.kustomization
        self.assertEqual(k["kind"], "Component")
        for r in k.get("resources", []):
            self.assertTrue(os.path.isfile(os.path.join(SIDECAR, r)), r)
        patches = k["patches"]
        self.assertEqual(len(patches), 1)
        self.assertTrue(os.path.isfile(os.path.join(SIDECAR, patches[0]["path"])))
        self.assertEqual(patches[0]["target"]["kind"], "DaemonSet")
        self.assertEqual(patches[0]["target"]["name"], "kepler-exporter")
        self.assertEqual(self.patch["kind"], "DaemonSet")
        self.assertEqual(self.patch["metadata"]["name"], "kepler-exporter")
        self.assertEqual(self.patch["metadata"]["namespace"], "kepler")

    def test_both_containers_share_dev_shm_in_memory_and_the_socket_directory(self):
        self.assertEqual(set(self.containers), {"kepler-exporter", "estimator"})
        shm = self.volumes["estimator-shm"]["emptyDir"]
        self.assertEqual(shm["medium"], "Memory")
        self.assertIn("sizeLimit", shm)
        socket = self.args["--socket"]
        self.assertEqual(socket, KEPLER_SOCKET, "Kepler connects to %s" % KEPLER_SOCKET)
        socket_dir = os.path.dirname(socket)
        for name, c in self.containers.items():
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            self.assertEqual(mounts.get("/dev/shm"), "estimator-shm", name)
            self.assertIn(socket_dir, mounts, "%s does not mount %s" % (name, socket_dir))
            vol = self.volumes[mounts[socket_dir]]
            self.assertIn("emptyDir", vol)
            self.assertNotEqual(mounts[socket_dir], "estimator-shm")
            for m in c["volumeMounts"]:
                self.assertIn(m["name"], self.volumes, "%s mounts an undeclared volume" % name)

    def test_shm_and_memory_are_sized_for_the_segment(self):
        slots = int(self.args["--slots"])
        slot_bytes = int(self.args["--slot-bytes"])
        segment = slots * (slot_bytes + slot_bytes // 2)  # request area + half for replies
        size_limit = quantity_bytes(self.volumes["estimator-shm"]["emptyDir"]["sizeLimit"])
        self.assertGreaterEqual(size_limit, segment + MIB, "sizeLimit below the segment")
        res = self.estimator["resources"]
        self.assertLessEqual(quantity_millicpu(res["requests"]["cpu"]), 100)
        self.assertLessEqual(quantity_bytes(res["requests"]["memory"]), 64 * MIB)
        self.assertIn("cpu", res["limits"])
        # tmpfs pages are charged to the container that commits them: the limit must hold
        # the segment and the daemon (about 12 MiB resident).
        self.assertGreaterEqual(quantity_bytes(res["limits"]["memory"]), segment + 16 * MIB)

    def test_probes_ping_the_daemon_by_its_segment_name(self):
        shm_name = self.args["--shm-name"]
        for probe in ("readinessProbe", "livenessProbe"):
            cmd = self.estimator[probe]["exec"]["command"]
            self.assertEqual(os.path.basename(cmd[0]), "estimator", probe)
            self.assertEqual(cmd[1], "ping", probe)
            opts = args_map(cmd[2:])
            self.assertEqual(opts["--shm-name"], shm_name, probe)
            timeout_s = int(opts["--timeout-ms"]) / 1000
            self.assertLess(timeout_s, self.estimator[probe]["timeoutSeconds"], probe)

    def test_security_context_is_locked_down(self):
        sc = self.estimator["securityContext"]
        self.assertTrue(sc["runAsNonRoot"])
        self.assertNotEqual(sc["runAsUser"], 0)
        self.assertTrue(sc["readOnlyRootFilesystem"])
        self.assertFalse(sc["allowPrivilegeEscalation"])
        self.assertEqual(sc["capabilities"]["drop"], ["ALL"])
        self.assertNotIn("add", sc["capabilities"])
        # The socket and segment are shared with Kepler (root): group access, not world.
        self.assertEqual(self.args["--shm-mode"], "0660")
        self.assertEqual(self.args["--socket-mode"], "0660")

    def test_metrics_port_is_declared_and_served_by_the_service(self):
        host, port = self.args["--metrics-address"].rsplit(":", 1)
        self.assertEqual(host, "0.0.0.0")
        ports = {p["name"]: p["containerPort"] for p in self.estimator["ports"]}
        self.assertEqual(ports["est-metrics"], int(port))
        self.assertNotEqual(int(port), 9102, "9102 is Kepler's port (hostNetwork pods)")
        with open(os.path.join(SIDECAR, "estimator-metrics-service.yaml")) as fh:
            svc = yaml.safe_load(fh)
        self.assertEqual(svc["kind"], "Service")
        self.assertEqual(svc["spec"]["ports"][0]["targetPort"], "est-metrics")
        self.assertEqual(svc["metadata"]["annotations"]["prometheus.io/port"], port)

    def test_estimatord_accepts_every_argument(self):
        options = estimatord_options()
        if options is None:
            self.skipTest("ESTIMATORD not given: cannot check the arguments against --help")
        for a in self.args:
            self.assertIn(a, options, "estimatord has no %s" % a)


class DockerfileTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with open(os.path.join(DEPLOY, "Dockerfile")) as fh:
            cls.lines = [l.strip() for l in fh.read().replace("\\\n", " ").splitlines()]
        cls.instructions = [l for l in cls.lines if l and not l.startswith("#")]

    def stages(self):
        return [l.split()[1:] for l in self.instructions if l.upper().startswith("FROM ")]

    def test_build_on_debian_12_then_an_empty_runtime(self):
        stages = self.stages()
        self.assertEqual(len(stages), 2, stages)
        self.assertEqual(stages[0][0], "debian:12")
        self.assertEqual(stages[0][2], "build")
        self.assertEqual(stages[1][0], "scratch")
        self.assertTrue(any(l.startswith("COPY --from=build /rootfs/ /") for l in self.instructions))

    def test_release_build_without_tests_and_bench_collected_and_stripped(self):
        run = " ".join(l for l in self.instructions if l.startswith("RUN "))
        for needle in ("-DCMAKE_BUILD_TYPE=Release", "-DESTIMATOR_BUILD_TESTS=OFF",
                       "-DESTIMATOR_BUILD_BENCH=OFF", "--target estimatord estimator",
                       "deploy/collect-runtime.sh --strip /rootfs"):
            self.assertIn(needle, run)
        # The package list is the one scripts/setup.sh keeps.
        self.assertIn("install_missing_packages", run)
        self.assertTrue(os.path.isfile(os.path.join(ROOT, "scripts", "setup.sh")))

    def test_setup_packages_cover_every_find_package_of_the_image_build(self):
        # The image installs PACKAGES of scripts/setup.sh and nothing else (tests and
        # bench are off): a library found by CMake but missing there breaks `docker build`.
        debian = {"Boost": "libboost-dev", "Eigen3": "libeigen3-dev",
                  "FlatBuffers": "libflatbuffers-dev", "spdlog": "libspdlog-dev",
                  "nlohmann_json": "nlohmann-json3-dev", "CLI11": "libcli11-dev",
                  "Threads": None, "HDF5": "libhdf5-dev", "libzip": "libzip-dev",
                  "CURL": "libcurl4-openssl-dev", "ZLIB": "zlib1g-dev"}
        test_only = {"GTest", "benchmark", "xgboost", "EstimatorClient"}
        packages = subprocess.run(
            ["bash", "-c", 'source "$1/scripts/setup.sh" && echo "${PACKAGES[@]}"', "-", ROOT],
            capture_output=True, text=True, timeout=30, check=True).stdout.split()
        for dirpath, dirs, files in os.walk(ROOT):
            rel = os.path.relpath(dirpath, ROOT)
            if rel.split(os.sep)[0] in ("tests", "bench", ".git") or rel.startswith("build"):
                dirs[:] = []
                continue
            if "CMakeLists.txt" not in files:
                continue
            with open(os.path.join(dirpath, "CMakeLists.txt")) as fh:
                for name in re.findall(r"^\s*find_package\((\w+)", fh.read(), re.M):
                    if name in test_only:
                        continue
                    self.assertIn(name, debian, "%s/CMakeLists.txt finds %s: add its Debian "
                                  "package to this test's map" % (rel, name))
                    if debian[name]:
                        self.assertIn(debian[name], packages, "%s/CMakeLists.txt finds %s but "
                                      "scripts/setup.sh PACKAGES lacks %s" % (rel, name, debian[name]))

    def test_runs_estimatord_as_a_non_root_user(self):
        user = [l.split()[1] for l in self.instructions if l.startswith("USER ")]
        self.assertEqual(len(user), 1)
        uid = user[0].split(":")[0]
        self.assertTrue(uid.isdigit() and int(uid) != 0, user)
        entry = [l for l in self.instructions if l.startswith("ENTRYPOINT ")]
        self.assertEqual(entry, ['ENTRYPOINT ["/usr/local/bin/estimatord"]'])

    def test_default_arguments_are_estimatord_options(self):
        options = estimatord_options()
        if options is None:
            self.skipTest("ESTIMATORD not given")
        cmd = [l for l in self.instructions if l.startswith("CMD ")]
        self.assertEqual(len(cmd), 1)
        import json
        for a in json.loads(cmd[0][4:]):
            if a.startswith("--"):
                self.assertIn(a.split("=")[0], options)


@unittest.skipUnless(ESTIMATORD and ESTIMATOR_CLI, "ESTIMATORD and ESTIMATOR_CLI not given")
class CollectedRuntimeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="estimator-rootfs-")
        cls.rootfs = os.path.join(cls.tmp, "rootfs")
        out = subprocess.run([os.path.join(DEPLOY, "collect-runtime.sh"), "--strip", cls.rootfs,
                              ESTIMATORD, ESTIMATOR_CLI],
                             capture_output=True, text=True, timeout=300)
        if out.returncode != 0:
            raise AssertionError("collect-runtime.sh failed: " + out.stderr)
        cls.log = out.stdout
        with open(ESTIMATORD, "rb") as fh:
            elf = fh.read(4096)
        # PT_INTERP path, as the program names it (e.g. /lib64/ld-linux-x86-64.so.2).
        m = re.search(rb"(/lib[^\x00]*/ld-linux[^\x00]*\.so\.\d)\x00", elf)
        cls.interp = m.group(1).decode() if m else None

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def lib_dirs(self):
        dirs = set()
        for dirpath, _, files in os.walk(self.rootfs):
            if any(".so" in f for f in files):
                dirs.add(dirpath)
        return ":".join(sorted(dirs))

    def loader(self):
        self.assertIsNotNone(self.interp, "no PT_INTERP in estimatord")
        path = self.rootfs + self.interp
        self.assertTrue(os.path.isfile(path) and not os.path.islink(path), path)
        return path

    def test_layout_and_size(self):
        for d in ("tmp", "dev/shm"):
            st = os.stat(os.path.join(self.rootfs, d))
            self.assertEqual(st.st_mode & 0o7777, 0o1777, d)
        with open(os.path.join(self.rootfs, "etc", "passwd")) as fh:
            self.assertIn(":65532:65532:", fh.read())
        for p in ("estimatord", "estimator"):
            self.assertTrue(os.access(os.path.join(self.rootfs, "usr/local/bin", p), os.X_OK))
        size = int(subprocess.run(["du", "-sb", self.rootfs], capture_output=True,
                                  text=True).stdout.split()[0])
        print("\nexpected image size: %.1f MiB (%d bytes)" % (size / MIB, size), file=sys.stderr)
        self.assertLess(size, 50 * MIB)

    def test_programs_run_through_the_collected_loader_with_only_collected_libraries(self):
        ld, libs = self.loader(), self.lib_dirs()
        for prog, banner in (("estimatord", "estimatord"), ("estimator", "estimator")):
            path = os.path.join(self.rootfs, "usr/local/bin", prog)
            out = subprocess.run([ld, "--library-path", libs, path, "--help"],
                                 capture_output=True, text=True, timeout=30)
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertIn(banner, out.stdout)
            # Where every library resolves: all inside the collected tree.
            listed = subprocess.run([ld, "--list", "--library-path", libs, path],
                                    capture_output=True, text=True, timeout=30)
            self.assertEqual(listed.returncode, 0, listed.stderr)
            for line in listed.stdout.splitlines():
                m = re.search(r"=> (\S+)", line)
                if m and m.group(1).startswith("/"):
                    self.assertTrue(m.group(1).startswith(self.rootfs),
                                    "%s resolves %s outside the image" % (prog, m.group(1)))

    def test_daemon_serves_inside_a_chroot_as_the_image_user(self):
        if os.geteuid() != 0 or shutil.which("chroot") is None:
            self.skipTest("needs root and chroot to run the image's tree as its root")
        name = "estimator-deploy-test-%d" % os.getpid()
        as_user = ["chroot", "--userspec=65532:65532", self.rootfs]
        daemon = subprocess.Popen(as_user + ["/usr/local/bin/estimatord", "--shm-name", name,
                                             "--shm-mode", "0660", "--slots", "4",
                                             "--slot-bytes", "65536",
                                             "--metrics-address", "127.0.0.1:0"],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            ok = False
            for _ in range(100):
                ping = subprocess.run(as_user + ["/usr/local/bin/estimator", "ping", "--shm-name",
                                                 name, "--timeout-ms", "200"],
                                      capture_output=True, text=True, timeout=30)
                if ping.returncode == 0:
                    ok = True
                    break
                if daemon.poll() is not None:
                    break
                time.sleep(0.05)
            self.assertTrue(ok, "no ping answer from the chrooted daemon")
            # The segment is owned by the image's user, with the mode asked for.
            st = os.stat(os.path.join(self.rootfs, "dev/shm", name))
            self.assertEqual((st.st_uid, st.st_mode & 0o777), (65532, 0o660))
        finally:
            daemon.send_signal(signal.SIGTERM)
            try:
                log, _ = daemon.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                daemon.kill()
                log, _ = daemon.communicate()
        self.assertEqual(daemon.returncode, 0, log)
        self.assertIn("metrics: http://127.0.0.1:", log)
        self.assertFalse(os.path.exists(os.path.join(self.rootfs, "dev/shm", name)))


if __name__ == "__main__":
    unittest.main(verbosity=2)
