#!/usr/bin/env python3
"""Lint and render the kgw Helm chart offline, and check what it would install.

Needs the Python packages `helm-python-sdk` (imports as helm_python; Helm's own
library, no helm binary) and `pyyaml`. No cluster is contacted.

Checks, for several sets of values:
  * helm lint reports no warning and no error;
  * one Deployment per pod (gateway, gloo, discovery, access-log, gateway-proxy,
    nats) with the expected replicas, image, binary and arguments;
  * the Services carry exactly the legacy ports (gloo 9976/9977/9988/9979/9966,
    gateway 443->8443, gateway-proxy 80->8080 and 443->8443, access-log 8083,
    nats 4222, plus the monitoring ports of gloo and gateway), select the right
    pods and target ports those pods declare;
  * discovery has no container port and no Service, and an exec liveness probe
    on a fresh health file;
  * the Envoy bootstrap ConfigMap points ADS at the gloo Service on 9977, sets
    the node role <namespace>~<gateway name> and admin on 19000 (and, when an
    `envoy` binary is on PATH, `envoy --mode validate` accepts it);
  * ServiceAccounts and RBAC for gateway, gloo and discovery.

Prints one line per case and a summary; exits 1 with every failure listed.

Usage: check_chart.py [--chart DIR] [--no-envoy]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

try:
    import helm_python
    import yaml
except ImportError as e:  # pragma: no cover - the caller installs them
    sys.exit(
        f"check_chart: missing Python package ({e}); "
        "install with: python3 -m pip install helm-python-sdk pyyaml"
    )

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CHART = os.path.normpath(os.path.join(HERE, "..", "helm", "kgw"))

OUR_PROCESSES = {
    # deployment: (values key, binary, monitoring port or None)
    "gateway": ("gateway", "gateway", 9091),
    "gloo": ("gloo", "controller", 9092),
    "discovery": ("discovery", "discovery", None),
    "access-log": ("accessLog", "access-log", 9093),
}

# Service name -> exact set of (port, target port number).
SERVICE_PORTS = {
    "gloo": {(9976, 9976), (9977, 9977), (9988, 9988), (9979, 9979), (9966, 9966), (9092, 9092)},
    "gateway": {(443, 8443), (9091, 9091)},
    "gateway-proxy": {(80, 8080), (443, 8443)},
    "access-log": {(8083, 8083)},
    "nats": {(4222, 4222)},
}
# Service name -> Deployment whose pods it must select.
SERVICE_TARGET = {s: s for s in SERVICE_PORTS}

NAMESPACED_KINDS = {"Deployment", "Service", "ServiceAccount", "ConfigMap"}


class Failures:
    def __init__(self) -> None:
        self.items: list[str] = []
        self.context = ""

    def check(self, cond: bool, msg: str) -> bool:
        if not cond:
            self.items.append(f"[{self.context}] {msg}")
        return cond


def deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def lint(chart: str, values: dict | None, f: Failures) -> None:
    report = helm_python.lint(chart, values)
    for m in report.get("messages", []):
        if m.get("severity", 0) >= 2:
            f.check(False, f"helm lint {m.get('path')}: {m.get('error')}")
    for e in report.get("errors", []):
        f.check(False, f"helm lint error: {e}")


def render(chart: str, values: dict | None, name: str, namespace: str) -> list[dict]:
    with helm_python.Chart.load(chart) as c:
        out = c.render(values, name=name, namespace=namespace)
    docs = []
    for path in sorted(out):
        if not path.endswith((".yaml", ".yml")):
            continue  # NOTES.txt
        for doc in yaml.safe_load_all(out[path]):
            if doc:
                doc.setdefault("__template", path)
                docs.append(doc)
    return docs


def index(docs: list[dict], f: Failures) -> dict[tuple[str, str], dict]:
    by = {}
    for d in docs:
        key = (d.get("kind"), d.get("metadata", {}).get("name"))
        f.check(None not in key and d.get("apiVersion"), f"object without apiVersion/kind/name in {d['__template']}")
        f.check(key not in by, f"duplicate {key[0]}/{key[1]}")
        by[key] = d
    return by


def of_kind(by: dict, kind: str) -> dict[str, dict]:
    return {n: d for (k, n), d in by.items() if k == kind}


def container(dep: dict) -> dict:
    return dep["spec"]["template"]["spec"]["containers"][0]


def env_value(c: dict, name: str):
    for e in c.get("env") or []:
        if e.get("name") == name:
            return e.get("value")
    return None


def resolve_target(port: dict, c_ports: list[dict]):
    """Service port's targetPort as a container port number, or None."""
    t = port.get("targetPort", port["port"])
    for cp in c_ports:
        if cp.get("name") == t or cp.get("containerPort") == t:
            return cp["containerPort"]
    return None


def check_envoy_bootstrap(boot: dict, ns: str, role: str, f: Failures) -> None:
    f.check(boot.get("node", {}).get("metadata", {}).get("role") == role,
            f"envoy node.metadata.role is {boot.get('node', {}).get('metadata', {}).get('role')!r}, want {role!r}")
    ads = boot.get("dynamic_resources", {}).get("ads_config", {})
    f.check(ads.get("api_type") == "GRPC", "envoy ads_config.api_type is not GRPC")
    services = ads.get("grpc_services") or [{}]
    cluster_name = services[0].get("envoy_grpc", {}).get("cluster_name")
    for rtype in ("cds_config", "lds_config"):
        f.check("ads" in boot.get("dynamic_resources", {}).get(rtype, {}), f"envoy {rtype} does not use ADS")
    clusters = {c["name"]: c for c in boot.get("static_resources", {}).get("clusters", [])}
    if f.check(cluster_name in clusters, f"envoy ADS cluster {cluster_name!r} is not a static cluster"):
        cl = clusters[cluster_name]
        addrs = [
            ep["endpoint"]["address"]["socket_address"]
            for lep in cl["load_assignment"]["endpoints"]
            for ep in lep["lb_endpoints"]
        ]
        f.check(len(addrs) == 1, f"envoy ADS cluster has {len(addrs)} endpoints, want 1")
        for a in addrs:
            f.check(a["address"].startswith(f"gloo.{ns}.svc"),
                    f"envoy ADS endpoint {a['address']!r} is not the gloo Service of {ns}")
            f.check(a["port_value"] == 9977, f"envoy ADS port is {a['port_value']}, want 9977")
        opts = str(cl.get("typed_extension_protocol_options", {}))
        f.check("http2_protocol_options" in opts, "envoy ADS cluster does not speak HTTP/2")
    admin = boot.get("admin", {}).get("address", {}).get("socket_address", {})
    f.check(admin.get("port_value") == 19000, f"envoy admin port is {admin.get('port_value')}, want 19000")


def envoy_validate(text: str, f: Failures) -> str:
    envoy = shutil.which("envoy")
    if not envoy:
        return "envoy not on PATH: bootstrap not validated by Envoy"
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as tmp:
        tmp.write(text)
    try:
        r = subprocess.run(
            [envoy, "--mode", "validate", "-c", tmp.name, "--service-node", "pod.ns",
             "--service-cluster", "gateway-proxy", "--log-level", "error"],
            capture_output=True, text=True, timeout=120,
        )
        f.check(r.returncode == 0, f"envoy --mode validate rejected the bootstrap:\n{r.stdout}\n{r.stderr}")
        return "envoy --mode validate: OK" if r.returncode == 0 else "envoy --mode validate: FAILED"
    finally:
        os.unlink(tmp.name)


def check_release(docs: list[dict], exp: dict, f: Failures, validate_envoy: bool) -> list[str]:
    ns = exp["namespace"]
    notes = []
    by = index(docs, f)
    deps, svcs = of_kind(by, "Deployment"), of_kind(by, "Service")
    sas, cms = of_kind(by, "ServiceAccount"), of_kind(by, "ConfigMap")

    for (kind, name), d in by.items():
        if kind in NAMESPACED_KINDS:
            f.check(d["metadata"].get("namespace") == ns, f"{kind}/{name} is not in namespace {ns}")

    want_deps = set(OUR_PROCESSES) | {"gateway-proxy"} | ({"nats"} if exp["nats_enabled"] else set())
    f.check(set(deps) == want_deps, f"Deployments are {sorted(deps)}, want {sorted(want_deps)}")

    for name, dep in deps.items():
        spec = dep["spec"]
        pod = spec["template"]
        f.check(spec.get("replicas") == exp["replicas"].get(name, 1),
                f"Deployment/{name} has replicas {spec.get('replicas')}, want {exp['replicas'].get(name, 1)}")
        sel = spec["selector"]["matchLabels"]
        labels = pod["metadata"]["labels"]
        f.check(sel.items() <= labels.items(), f"Deployment/{name} selector {sel} does not match its pod labels")
        for other, od in deps.items():
            if other != name:
                f.check(not sel.items() <= od["spec"]["template"]["metadata"]["labels"].items(),
                        f"Deployment/{name} selector also matches the pods of {other}")
        cs = pod["spec"]["containers"]
        f.check(len(cs) == 1, f"Deployment/{name} has {len(cs)} containers, want 1")
        c = cs[0]
        f.check(c.get("image") == exp["images"].get(name),
                f"Deployment/{name} image is {c.get('image')!r}, want {exp['images'].get(name)!r}")
        f.check(bool((c.get("resources") or {}).get("requests")), f"Deployment/{name} has no resource requests")
        sa = pod["spec"].get("serviceAccountName")
        f.check(sa in sas, f"Deployment/{name} uses ServiceAccount {sa!r}, which the chart does not create")

    for name, (_, binary, mon) in OUR_PROCESSES.items():
        if name not in deps:
            continue
        c = container(deps[name])
        args = c.get("args") or []
        f.check(c.get("command") == [binary], f"Deployment/{name} runs {c.get('command')}, want [{binary!r}]")
        f.check(f"--nats-url={exp['nats_url']}" in args, f"Deployment/{name} args {args} lack --nats-url")
        if binary in ("gateway", "discovery"):
            f.check("--source=kubernetes" in args, f"Deployment/{name} args {args} lack --source=kubernetes")
        check_flags_exist(f, name, binary, args)
        f.check(env_value(c, "KGW_NATS_URL") == exp["nats_url"],
                f"Deployment/{name} env KGW_NATS_URL is {env_value(c, 'KGW_NATS_URL')!r}, want {exp['nats_url']!r}")
        ports = c.get("ports") or []
        if mon is None:
            f.check(not ports, f"Deployment/{name} declares container ports {ports}; it listens on nothing")
            live = (c.get("livenessProbe") or {}).get("exec", {}).get("command") or []
            script = " ".join(live)
            f.check("/tmp/kgw-discovery-healthy" in script and "find" in script and "-mmin" in script,
                    f"Deployment/{name} liveness is not an exec probe on a fresh health file: {live}")
            for p in ("readinessProbe", "livenessProbe", "startupProbe"):
                f.check("httpGet" not in (c.get(p) or {}) and "tcpSocket" not in (c.get(p) or {}),
                        f"Deployment/{name} {p} probes a port")
            continue
        mports = [p for p in ports if p.get("name") == "http-monitoring"]
        f.check(len(mports) == 1 and mports[0]["containerPort"] == mon,
                f"Deployment/{name} http-monitoring port is {mports}, want {mon}")
        f.check(f"--monitoring-addr=0.0.0.0:{mon}" in args,
                f"Deployment/{name} args lack --monitoring-addr=0.0.0.0:{mon}")
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            g = (c.get(probe) or {}).get("httpGet") or {}
            f.check(g.get("path") == path and g.get("port") in ("http-monitoring", mon),
                    f"Deployment/{name} {probe} is {g}, want GET {path} on http-monitoring")

    if "nats" in deps:
        c = container(deps["nats"])
        f.check("-js" in (c.get("args") or []), "Deployment/nats does not enable JetStream (-js)")
        cports = {p["containerPort"] for p in c.get("ports") or []}
        f.check({4222, 8222} <= cports, f"Deployment/nats container ports {cports} lack 4222/8222")

    # Services: exact ports, right pods, targets that exist.
    want_svcs = set(SERVICE_PORTS) - (set() if exp["nats_enabled"] else {"nats"})
    f.check(set(svcs) == want_svcs, f"Services are {sorted(svcs)}, want {sorted(want_svcs)}")
    for name, svc in svcs.items():
        sel = svc["spec"].get("selector") or {}
        matched = [d for d, dep in deps.items()
                   if sel and sel.items() <= dep["spec"]["template"]["metadata"]["labels"].items()]
        target = SERVICE_TARGET.get(name)
        f.check(matched == [target], f"Service/{name} selects the pods of {matched}, want [{target!r}]")
        if target not in deps:
            continue
        cports = container(deps[target]).get("ports") or []
        got = set()
        for p in svc["spec"]["ports"]:
            tgt = resolve_target(p, cports)
            f.check(tgt is not None, f"Service/{name} port {p['port']} targets {p.get('targetPort')!r}, "
                                     f"which Deployment/{target} does not declare")
            got.add((p["port"], tgt))
        f.check(got == SERVICE_PORTS.get(name), f"Service/{name} ports (port, target) are {sorted(got, key=str)}, "
                                                f"want {sorted(SERVICE_PORTS.get(name, ()))}")
    if "discovery" in deps:
        dl = deps["discovery"]["spec"]["template"]["metadata"]["labels"]
        for name, svc in svcs.items():
            sel = svc["spec"].get("selector") or {}
            f.check(not (sel and sel.items() <= dl.items()), f"Service/{name} selects the discovery pods")

    # gateway-proxy: Envoy and its bootstrap.
    if "gateway-proxy" in deps:
        gp = deps["gateway-proxy"]
        c = container(gp)
        cports = {p["containerPort"] for p in c.get("ports") or []}
        f.check({8080, 8443, 19000} <= cports, f"Deployment/gateway-proxy container ports {cports} lack 8080/8443/19000")
        cm_names = [v["configMap"]["name"] for v in gp["spec"]["template"]["spec"].get("volumes") or []
                    if "configMap" in v]
        f.check(len(cm_names) == 1, f"Deployment/gateway-proxy mounts ConfigMaps {cm_names}, want 1")
        for cm_name in cm_names:
            if not f.check(cm_name in cms, f"ConfigMap/{cm_name} mounted by gateway-proxy is not rendered"):
                continue
            data = cms[cm_name].get("data") or {}
            if not f.check("envoy.yaml" in data, f"ConfigMap/{cm_name} has no envoy.yaml"):
                continue
            config_path = next((a.split("=", 1)[1] for a in c.get("args", []) if a.startswith("--config-path=")), "")
            f.check(config_path.endswith("/envoy.yaml"), f"Envoy --config-path is {config_path!r}")
            text = data["envoy.yaml"]
            f.check("gloo" in text and "9977" in text, "Envoy bootstrap does not name gloo and 9977")
            check_envoy_bootstrap(yaml.safe_load(text), ns, exp["role"], f)
            if validate_envoy:
                notes.append(envoy_validate(text, f))

    # RBAC.
    roles, bindings = of_kind(by, "ClusterRole"), of_kind(by, "ClusterRoleBinding")
    if exp["rbac"]:
        def grants(role: str, group: str, resource: str, verbs: set[str]) -> bool:
            for r in (roles.get(role) or {}).get("rules", []):
                if group in r.get("apiGroups", []) and resource in r.get("resources", []) \
                        and verbs <= set(r.get("verbs", [])):
                    return True
            return False

        gw, disc = f"kgw-gateway-{ns}", f"kgw-discovery-{ns}"
        read = {"get", "list", "watch"}
        need = {
            gw: [("gateway.networking.k8s.io", r, read) for r in ("gatewayclasses", "gateways", "httproutes")]
                + [("gateway.networking.k8s.io", r, {"update"}) for r in ("gateways/status", "httproutes/status")]
                + [("", "services", read), ("", "secrets", read), ("discovery.k8s.io", "endpointslices", read)],
            disc: [("", "services", read), ("discovery.k8s.io", "endpointslices", read)],
        }
        for role, rules in need.items():
            if not f.check(role in roles, f"ClusterRole/{role} is missing"):
                continue
            for g, r, v in rules:
                f.check(grants(role, g, r, v), f"ClusterRole/{role} does not grant {sorted(v)} on {g or 'core'}/{r}")
        for b in bindings.values():
            ref = b["roleRef"]["name"]
            f.check(ref in roles, f"ClusterRoleBinding/{b['metadata']['name']} refers to missing role {ref}")
            for s in b.get("subjects", []):
                f.check(s.get("kind") == "ServiceAccount" and s.get("name") in sas and s.get("namespace") == ns,
                        f"ClusterRoleBinding/{b['metadata']['name']} subject {s} is not a chart ServiceAccount in {ns}")
        f.check({r["roleRef"]["name"] for r in bindings.values()} >= {gw, disc}, "gateway/discovery roles are not bound")
    else:
        f.check(not roles and not bindings, "rbac.create=false still renders ClusterRoles/Bindings")
    return notes


def expectations(chart: str, values: dict, namespace: str) -> dict:
    """What the rendered release should contain for these values."""
    with helm_python.Chart.load(chart) as c:
        v = c.merge_values(values)
    with open(os.path.join(chart, "Chart.yaml")) as fh:
        app_version = yaml.safe_load(fh)["appVersion"]
    keys = {"gateway": "gateway", "gloo": "gloo", "discovery": "discovery", "access-log": "accessLog",
            "gateway-proxy": "gatewayProxy", "nats": "nats"}
    images, replicas = {}, {}
    for dep, key in keys.items():
        img = v[key]["image"]
        images[dep] = f"{img['repository']}:{img.get('tag') or app_version}"
        replicas[dep] = v[key]["replicas"]
    nats_url = v["nats"]["url"] or f"nats://nats.{namespace}.svc.{v['clusterDomain']}:4222"
    gp = v["gatewayProxy"]
    return {
        "namespace": namespace,
        "images": images,
        "replicas": replicas,
        "nats_url": nats_url,
        "nats_enabled": v["nats"]["enabled"],
        "rbac": v["rbac"]["create"],
        "role": f"{gp['gatewayNamespace'] or namespace}~{gp['gatewayName']}",
    }


CASES = [
    # (label, release name, namespace, values, hard-coded expectations to cross-check)
    ("defaults", "kgw", "gloo-system", {}, {
        "replicas": {"discovery": 1, "gateway": 1},
        "images": {"gateway-proxy": "envoyproxy/envoy:v1.40.0", "gloo": "kgw/controller:0.1.0"},
        "role": "gloo-system~gateway-proxy",
        "nats_url": "nats://nats.gloo-system.svc.cluster.local:4222",
    }),
    ("overrides", "edge", "kgw-test", {
        "discovery": {"replicas": 3},
        "gateway": {"image": {"tag": "1.2.3"}},
        "gloo": {"image": {"repository": "example.invalid/kgw/controller", "tag": "dev"}},
        "gatewayProxy": {"gatewayName": "public", "gatewayNamespace": "apps", "replicas": 2},
    }, {
        "replicas": {"discovery": 3, "gateway-proxy": 2, "gloo": 1},
        "images": {"gateway": "kgw/gateway:1.2.3", "gloo": "example.invalid/kgw/controller:dev"},
        "role": "apps~public",
        "nats_url": "nats://nats.kgw-test.svc.cluster.local:4222",
    }),
    ("external-nats-no-rbac", "kgw", "gloo-system", {
        "nats": {"enabled": False, "url": "nats://broker.messaging:4222"},
        "rbac": {"create": False},
    }, {
        "nats_url": "nats://broker.messaging:4222",
        "nats_enabled": False,
        "rbac": False,
    }),
]


def check_flags_exist(f, name, binary, args):
    """Every --flag the chart passes must be one the real binary accepts (its --help)."""
    bin_dir = os.environ.get("KGW_BIN_DIR")
    if not bin_dir:
        return
    path = os.path.join(bin_dir, binary)
    f.check(os.access(path, os.X_OK), f"binary {path} not found (KGW_BIN_DIR)")
    if not os.access(path, os.X_OK):
        return
    help_text = subprocess.run([path, "--help"], capture_output=True, text=True).stdout
    for arg in args:
        flag = arg.split("=", 1)[0]
        if flag.startswith("--"):
            f.check(re.search(re.escape(flag) + r"\b", help_text) is not None,
                    f"Deployment/{name}: {binary} does not accept {flag} (see `{binary} --help`)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chart", default=DEFAULT_CHART, help="chart directory (default: %(default)s)")
    ap.add_argument("--no-envoy", action="store_true", help="do not run `envoy --mode validate`")
    opts = ap.parse_args()
    chart = os.path.abspath(opts.chart)
    f = Failures()
    print(f"check_chart: chart {os.path.relpath(chart)} (helm {helm_python.helm_sdk_version()})")

    for label, release, ns, values, pinned in CASES:
        f.context = label
        before = len(f.items)
        try:
            lint(chart, values or None, f)
            exp = expectations(chart, values, ns)
            # The pinned numbers guard against the expectations drifting with the chart.
            for k, want in pinned.items():
                got = exp[k]
                if isinstance(want, dict):
                    got = {kk: got.get(kk) for kk in want}
                f.check(got == want, f"expected {k} {got!r} is not the pinned {want!r}")
            docs = render(chart, values or None, release, ns)
            notes = check_release(docs, exp, f, validate_envoy=not opts.no_envoy)
        except Exception as e:  # a render error is a failure like any other
            f.check(False, f"{type(e).__name__}: {e}")
            docs, notes = [], []
        status = "ok" if len(f.items) == before else f"FAILED ({len(f.items) - before})"
        kinds = {}
        for d in docs:
            kinds[d["kind"]] = kinds.get(d["kind"], 0) + 1
        summary = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        print(f"  {label:<22} ns={ns:<12} {status:<10} {summary}")
        for n in notes:
            print(f"    {n}")

    if f.items:
        print(f"\ncheck_chart: {len(f.items)} failure(s):", file=sys.stderr)
        for item in f.items:
            print(f"  - {item}", file=sys.stderr)
        return 1
    print(f"check_chart: all {len(CASES)} cases passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
