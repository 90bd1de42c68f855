#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Checks of deploy/: the Kubernetes manifests agree with each other and with estimatord's
options, the sidecar component wires an unmodified Kepler v0.9 (tests/deploy/kepler-v0.9,
rendered with `kubectl kustomize` when kubectl is installed, else merged here), the
Dockerfile has the stages the image needs, and the runtime collected by
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
        patches = {p["target"]["kind"]: p for p in k["patches"]}
        self.assertEqual(sorted(patches), ["ConfigMap", "DaemonSet"])
        for p in patches.values():
            self.assertTrue(os.path.isfile(os.path.join(SIDECAR, p["path"])), p["path"])
        self.assertEqual(patches["DaemonSet"]["target"]["name"], "kepler-exporter")
        self.assertEqual(patches["ConfigMap"]["target"]["name"], "kepler-cfm")
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

    def test_liveness_pings_the_daemon_by_its_segment_name(self):
        shm_name = self.args["--shm-name"]
        for probe in ("livenessProbe",):
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


KEPLER_V09 = os.path.join(ROOT, "tests", "deploy", "kepler-v0.9")
KEPLER_PREFIXES = ("NODE_TOTAL", "NODE_COMPONENTS", "CONTAINER_TOTAL", "CONTAINER_COMPONENTS",
                   "PROCESS_TOTAL", "PROCESS_COMPONENTS")
DEFAULT_FETCH_MAX_BYTES = 64 * MIB  # service/fetch_config.h


def prefix_model(prefix):
    """(source, output type) of a Kepler model prefix: node models include idle power,
    TOTAL is the platform meter (acpi), COMPONENTS is RAPL."""
    return ("acpi" if prefix.endswith("_TOTAL") else "rapl-sysfs",
            "AbsPower" if prefix.startswith("NODE_") else "DynPower")


def kepler_model_config(text):
    """MODEL_CONFIG as Kepler's Go code reads it: whitespace-separated fields, each kept
    when it splits on '=' into exactly two parts."""
    out = {}
    for field in text.split():
        parts = field.split("=")
        if len(parts) == 2:
            out[parts[0].strip()] = parts[1].strip()
    return out


def strategic_merge(base, patch, key=None):
    """The parts of Kubernetes' strategic merge patch the sidecar component uses: maps merge,
    lists of named objects merge by name (volumeMounts by mountPath), other lists replace."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = strategic_merge(base.get(k), v, k) if k in base else v
        return out
    if isinstance(base, list) and isinstance(patch, list):
        merge_key = {"volumeMounts": "mountPath", "ports": "containerPort"}.get(key, "name")
        if all(isinstance(x, dict) and merge_key in x for x in base + patch):
            out = list(base)
            index = {x[merge_key]: i for i, x in enumerate(out)}
            for item in patch:
                if item[merge_key] in index:
                    i = index[item[merge_key]]
                    out[i] = strategic_merge(out[i], item)
                else:
                    out.append(item)
            return out
    return patch


def kubectl_with_components():
    """True when kubectl's embedded kustomize knows Components (3.7 and later; Debian 12's
    kubernetes-client 1.20 embeds kustomize 2, which does not)."""
    if not shutil.which("kubectl"):
        return False
    out = subprocess.run(["kubectl", "version", "--client", "-o", "json"], capture_output=True,
                         text=True, timeout=60)
    try:
        import json
        version = json.loads(out.stdout).get("kustomizeVersion", "")
    except ValueError:
        return False
    m = re.match(r"v?(\d+)\.(\d+)", version)
    return bool(m) and (int(m.group(1)), int(m.group(2))) >= (3, 7)


def render_kepler_with_sidecar():
    """Kepler v0.9's DaemonSet and ConfigMap with the component applied, and how."""
    if kubectl_with_components():
        out = subprocess.run(["kubectl", "kustomize", KEPLER_V09], capture_output=True,
                             text=True, timeout=120)
        if out.returncode != 0:
            raise AssertionError("kubectl kustomize %s failed: %s" % (KEPLER_V09, out.stderr))
        docs = [d for d in yaml.safe_load_all(out.stdout) if d]
        how = "kubectl kustomize"
    else:
        with open(os.path.join(KEPLER_V09, "kepler.yaml")) as fh:
            docs = [d for d in yaml.safe_load_all(fh) if d]
        with open(os.path.join(SIDECAR, "kustomization.yaml")) as fh:
            component = yaml.safe_load(fh)
        for p in component["patches"]:
            with open(os.path.join(SIDECAR, p["path"])) as fh:
                patch = yaml.safe_load(fh)
            for i, d in enumerate(docs):
                if d["kind"] == p["target"]["kind"] and d["metadata"]["name"] == p["target"]["name"]:
                    docs[i] = strategic_merge(d, patch)
        how = "the test's strategic merge (no kubectl)"
    found = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    return found[("DaemonSet", "kepler-exporter")], found[("ConfigMap", "kepler-cfm")], how


class KeplerWiringTest(unittest.TestCase):
    """The component applied to an unmodified Kepler v0.9: each wiring issue 14 names."""

    @classmethod
    def setUpClass(cls):
        cls.daemonset, cls.configmap, cls.how = render_kepler_with_sidecar()
        print("\nrendered with %s" % cls.how, file=sys.stderr)
        cls.pod = cls.daemonset["spec"]["template"]["spec"]
        cls.containers = {c["name"]: c for c in cls.pod["containers"]}
        cls.volumes = {v["name"]: v for v in cls.pod["volumes"]}
        cls.estimator = cls.containers["estimator"]
        cls.kepler = cls.containers["kepler-exporter"]
        cls.args = args_map(cls.estimator["args"])
        cls.model_config = cls.configmap["data"]["MODEL_CONFIG"]

    def mounts(self, container):
        return {m["mountPath"]: m for m in container.get("volumeMounts", [])}

    def literal_env(self):
        return {e["name"]: e["value"] for e in self.estimator.get("env", []) if "value" in e}

    def config_dir_mount(self):
        """The path where the estimator container mounts Kepler's kepler-cfm."""
        for path, m in self.mounts(self.estimator).items():
            vol = self.volumes[m["name"]]
            if vol.get("configMap", {}).get("name") == "kepler-cfm":
                return path
        return None

    def materialize(self, tmp, model_config=None):
        """The ConfigMap as the kubelet mounts it: one file per key."""
        d = os.path.join(tmp, "kepler.config")
        os.makedirs(d, exist_ok=True)
        data = dict(self.configmap["data"])
        if model_config is not None:
            data["MODEL_CONFIG"] = model_config
        for k, v in data.items():
            with open(os.path.join(d, k), "w") as fh:
                fh.write(v)
        return d

    def print_config(self, config_dir, extra_env=None):
        env = {k: v for k, v in os.environ.items()
               if k != "MODEL_CONFIG" and not k.startswith(("FETCH_", "MODEL_SERVER_"))}
        env.update(self.literal_env())
        env.update(extra_env or {})
        out = subprocess.run([ESTIMATORD, "--config", config_dir, "--print-config"],
                             capture_output=True, text=True, timeout=30, env=env)
        values = dict(l.split("=", 1) for l in out.stdout.splitlines() if "=" in l)
        return out.returncode, values, out.stderr

    def fetch_max_bytes(self):
        if ESTIMATORD and os.access(ESTIMATORD, os.X_OK):
            with tempfile.TemporaryDirectory() as tmp:
                rc, values, err = self.print_config(self.materialize(tmp))
            self.assertEqual(rc, 0, err)
            return int(values["FETCH_MAX_BYTES"])
        return int(self.literal_env().get("FETCH_MAX_BYTES", DEFAULT_FETCH_MAX_BYTES))

    def test_model_config_turns_keplers_estimator_on_for_models_the_sidecar_serves(self):
        kv = kepler_model_config(self.model_config)
        on = [k[:-len("_ESTIMATOR")] for k, v in kv.items()
              if k.endswith("_ESTIMATOR") and v.lower() == "true"]
        self.assertTrue(on, "MODEL_CONFIG turns no <PREFIX>_ESTIMATOR on: %r" % self.model_config)
        for prefix in on:
            self.assertIn(prefix, KEPLER_PREFIXES)
            source, output_type = prefix_model(prefix)
            embedded = os.path.isdir(os.path.join(ROOT, "data", "model", source, output_type))
            fetched = bool(kv.get(prefix + "_INIT_URL"))
            self.assertTrue(embedded or fetched, "%s_ESTIMATOR=true but the sidecar has no %s %s "
                            "model (embedded or INIT_URL)" % (prefix, source, output_type))
        # Kepler splits MODEL_CONFIG on whitespace: a comment's words would be read as keys.
        for line in self.model_config.splitlines():
            self.assertFalse(line.strip().startswith("#"), line)

    def test_the_estimator_reads_the_same_model_config_as_kepler(self):
        # Kepler reads kepler-cfm from a volume; the estimator mounts the same ConfigMap
        # and points --config at it (or takes MODEL_CONFIG from the same key).
        path = self.config_dir_mount()
        env_from_key = [e for e in self.estimator.get("env", [])
                        if e["name"] == "MODEL_CONFIG" and
                        e.get("valueFrom", {}).get("configMapKeyRef", {}) ==
                        {"name": "kepler-cfm", "key": "MODEL_CONFIG"}]
        self.assertTrue(path or env_from_key, "the estimator sees no kepler-cfm")
        if path:
            self.assertEqual(self.args.get("--config"), path)
            self.assertTrue(self.mounts(self.estimator)[path].get("readOnly"))
        kepler_cfm = [p for p, m in self.mounts(self.kepler).items()
                      if self.volumes[m["name"]].get("configMap", {}).get("name") == "kepler-cfm"]
        self.assertEqual(kepler_cfm, ["/etc/kepler/kepler.config"], "Kepler's own mount changed")

    def test_the_daemon_accepts_the_shipped_model_config_and_keplers_documented_line(self):
        if not (ESTIMATORD and os.access(ESTIMATORD, os.X_OK)):
            self.skipTest("ESTIMATORD not given")
        with tempfile.TemporaryDirectory() as tmp:
            rc, values, err = self.print_config(self.materialize(tmp))
            self.assertEqual(rc, 0, err)
            self.assertEqual(values["MODEL_SERVER_ENABLE"], "false")
            # Kepler's documentation writes the model-server switch YAML-style inside
            # MODEL_CONFIG; that must start the daemon (with the switch on), not crash-loop it.
            documented = self.model_config + 'MODEL_SERVER_ENABLE: "true"\n'
            rc, values, err = self.print_config(self.materialize(tmp, documented))
            self.assertEqual(rc, 0, err)
            self.assertEqual(values["MODEL_SERVER_ENABLE"], "true")
            # The same text through the environment, as MODEL_CONFIG.
            rc, values, err = self.print_config(self.materialize(tmp),
                                                {"MODEL_CONFIG": documented})
            self.assertEqual(rc, 0, err)
            self.assertEqual(values["MODEL_SERVER_ENABLE"], "true")
            # An INIT_URL line added as the ConfigMap's comment says reaches the fetcher.
            url = "https://models.example/v0.7/ec2/intel_rapl/AbsPower/BPFOnly/X_0.zip"
            rc, values, err = self.print_config(self.materialize(
                tmp, self.model_config + "NODE_COMPONENTS_INIT_URL=%s\n" % url))
            self.assertEqual(rc, 0, err)
            self.assertEqual(values["NODE_COMPONENTS_INIT_URL"], url)
            self.assertEqual(values["FETCH_ENABLED"], "true")
            # A bad value stops it with the key named (exit 2), instead of serving half-configured.
            rc, _, err = self.print_config(self.materialize(tmp, "FETCH_RETRIES=lots\n"))
            self.assertEqual(rc, 2)
            self.assertIn("FETCH_RETRIES", err)

    def test_fetched_models_land_in_a_volume_sized_for_fetch_max_bytes(self):
        model_dir = self.args["--model-dir"]
        mounts = self.mounts(self.estimator)
        self.assertIn(model_dir, mounts, "--model-dir is not a mounted volume")
        self.assertFalse(mounts[model_dir].get("readOnly"), "fetched models need to be written")
        vol = self.volumes[mounts[model_dir]["name"]]["emptyDir"]
        self.assertNotEqual(vol.get("medium"), "Memory", "models on tmpfs would count as memory")
        socket_dir = os.path.dirname(self.args["--socket"])
        self.assertNotEqual(mounts[model_dir]["name"], mounts[socket_dir]["name"])
        # The model being replaced and the one being checked: two of the largest download.
        fetch_max = self.fetch_max_bytes()
        self.assertGreaterEqual(quantity_bytes(vol["sizeLimit"]), 2 * fetch_max)
        # A download is held in memory while it is checked: the memory limit holds one on
        # top of the segment and the daemon, or the largest accepted download OOM-kills it.
        slots, slot_bytes = int(self.args["--slots"]), int(self.args["--slot-bytes"])
        segment = slots * (slot_bytes + slot_bytes // 2)
        limit = quantity_bytes(self.estimator["resources"]["limits"]["memory"])
        self.assertGreaterEqual(limit, segment + 16 * MIB + fetch_max)

    def test_startup_and_readiness_probes_use_the_health_endpoints(self):
        host, port = self.args["--metrics-address"].rsplit(":", 1)
        named = {p["name"]: p["containerPort"] for p in self.estimator["ports"]}
        for probe, paths in (("startupProbe", ("/healthz", "/readyz")),
                             ("readinessProbe", ("/readyz", "/healthz"))):
            get = self.estimator[probe]["httpGet"]
            self.assertIn(get["path"], paths, probe)
            target = named.get(get["port"], get["port"])
            self.assertEqual(int(target), int(port), "%s probes another port" % probe)
        startup = self.estimator["startupProbe"]
        # Room for a slow node: the embedded defaults load in milliseconds, a loaded node
        # may take seconds to schedule the process at all.
        self.assertGreaterEqual(startup["periodSeconds"] * startup["failureThreshold"], 30)

    def test_pod_group_gives_other_uids_the_0660_segment_and_socket(self):
        self.assertEqual(self.args["--shm-mode"], "0660")
        self.assertEqual(self.args["--socket-mode"], "0660")
        pod_sc = self.pod.get("securityContext", {})
        group = self.estimator["securityContext"]["runAsGroup"]
        # fsGroup makes the emptyDir volumes (and so the segment and socket) the group's,
        # and adds it to every container's groups; supplementalGroups says so explicitly.
        self.assertEqual(pod_sc.get("fsGroup"), group)
        self.assertIn(group, pod_sc.get("supplementalGroups", []))

    def test_shared_volumes_are_mounted_where_each_container_expects_them(self):
        socket_dir = os.path.dirname(self.args["--socket"])
        self.assertEqual(self.args["--socket"], KEPLER_SOCKET)
        for name, c in (("kepler-exporter", self.kepler), ("estimator", self.estimator)):
            mounts = self.mounts(c)
            self.assertEqual(mounts["/dev/shm"]["name"], "estimator-shm", name)
            self.assertEqual(mounts[socket_dir]["name"], "estimator-socket", name)
            for m in mounts.values():
                self.assertIn(m["name"], self.volumes, "%s mounts an undeclared volume" % name)
        self.assertEqual(self.volumes["estimator-shm"]["emptyDir"]["medium"], "Memory")
        # Kepler's own container is left as it was otherwise.
        self.assertTrue(self.kepler["securityContext"]["privileged"])
        self.assertEqual(self.kepler["ports"][0]["containerPort"], 9102)


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
