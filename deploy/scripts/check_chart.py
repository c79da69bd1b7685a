#!/usr/bin/env python3
"""Lint and render the kgw Helm chart offline, and check what it would install.

Needs the Python packages `helm-python-sdk` (imports as helm_python; Helm's own
library, no helm binary) and `pyyaml`. No cluster is contacted.

Checks, for several sets of values:
  * helm lint reports no warning and no error;
  * the chart's crds/ holds our RouteOption CRD and the Gateway API CRDs;
  * one Deployment per pod (gateway, gloo, discovery, gateway-proxy), the
    access-log StatefulSet (2 replicas by default, each named by the headless
    Service access-log-headless, and gloo's --access-log-addr lists every one)
    and the nats StatefulSet (JetStream on a PVC, or an emptyDir) with the
    expected replicas, image, binary and arguments, and a PodDisruptionBudget
    each;
  * the Services carry exactly the legacy ports (gloo 443->gateway 8443 and
    9976/9977/9988/9979/9966, gateway-proxy 80->8080 and 443->8443,
    access-log 8083, nats 4222), each port reaching exactly the pods meant;
  * discovery has no container port and no Service, and an exec liveness probe
    on a fresh health file;
  * the Envoy bootstrap ConfigMap points ADS at the gloo Service on 9977, sets
    the node role <namespace>~<gateway name> and admin on 19000 (and, when an
    `envoy` binary is on PATH, `envoy --mode validate` accepts it);
  * the ValidatingWebhookConfiguration: our kinds, Service gloo:443
    /validation, failurePolicy and namespaceSelector from values, and the CA
    of the certificate the gateway pods mount (generated or the user's);
  * ServiceAccounts and least-privilege RBAC: exactly the rules each component
    needs (Secrets read by gloo and, for Lambda credentials, discovery;
    nothing for access-log);
  * mTLS (on by default): each pod of ours mounts the Secret of its own
    identity at /etc/kgw/tls and sets KGW_TLS_DIR; the generated certificates
    carry the common names of kgw_proto::identity and the DNS names clients
    verify, signed by the CA in every Secret's ca.crt (openssl, when present);
    the gateway-proxy gets its certificate, the SDS files and a bootstrap whose
    xDS cluster speaks TLS; nats-server requires client certificates; with
    cert-manager an Issuer and a Certificate per identity instead; with
    mtls.enabled=false every process gets KGW_INSECURE_NO_MTLS=true and
    nothing else of mTLS is rendered.

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

# Service name -> exact set of (port, workload whose pods serve it, target port number).
# Service gloo spans two workloads: 443 is the gateway's webhook, as in Gloo Edge.
SERVICE_PORTS = {
    "gloo": {(443, "gateway", 8443), (9976, "gloo", 9976), (9977, "gloo", 9977), (9988, "gloo", 9988),
             (9979, "gloo", 9979), (9966, "gloo", 9966)},
    "gateway-proxy": {(80, "gateway-proxy", 8080), (443, "gateway-proxy", 8443)},
    "access-log": {(8083, "access-log", 8083)},
    "access-log-headless": {(8083, "access-log", 8083)},
    "nats": {(4222, "nats", 4222)},
}
# Our processes that run as a StatefulSet (the others are Deployments).
STATEFUL = {"access-log"}

NAMESPACED_KINDS = {"Deployment", "StatefulSet", "Service", "ServiceAccount", "ConfigMap", "Secret",
                    "PodDisruptionBudget", "Role", "RoleBinding", "Issuer", "Certificate"}

# mTLS: workload -> the identity whose Secret (kgw-<who>-tls) it mounts at /etc/kgw/tls.
MTLS_WORKLOADS = {"gateway": "gateway", "gloo": "controller", "discovery": "discovery",
                  "access-log": "access-log", "gateway-proxy": "gateway-proxy"}
MTLS_DIR = "/etc/kgw/tls"
SDS_DIR = "/etc/kgw/sds"

READ = ["get", "list", "watch"]
# ClusterRole (by component) -> exactly its rules, as (apiGroup, resource, verbs).
LEAST_PRIVILEGE = {
    "gateway": {
        *(("gateway.networking.k8s.io", r, tuple(READ))
          for r in ("gatewayclasses", "gateways", "httproutes", "referencegrants", "listenersets",
                    "backendtlspolicies")),
        *(("gateway.networking.k8s.io", f"{r}/status", ("patch",))
          for r in ("gatewayclasses", "gateways", "httproutes")),
        ("gateway.solo.io", "routeoptions", tuple(READ)),
        ("gateway.solo.io", "routeoptions/status", ("patch",)),
        ("gloo.solo.io", "upstreams", tuple(READ)),
        ("", "services", tuple(READ)),
        ("", "namespaces", tuple(READ)),
        ("", "configmaps", tuple(READ)),
    },
    "gloo": {("", "secrets", tuple(READ))},
    "discovery": {("", "services", tuple(READ)), ("discovery.k8s.io", "endpointslices", tuple(READ)),
                  ("", "namespaces", tuple(READ)),
                  ("gloo.solo.io", "upstreams", tuple(READ)),
                  # The AWS credentials of Lambda Upstreams (function discovery).
                  ("", "secrets", tuple(READ))},
}
LEASE_RULES = {("coordination.k8s.io", "leases", ("create", "get", "list", "patch", "update", "watch"))}
WEBHOOK_KINDS = {("gateway.networking.k8s.io", "httproutes"), ("gateway.networking.k8s.io", "gateways"),
                 ("gateway.solo.io", "routeoptions"), ("gloo.solo.io", "upstreams")}


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


def endpoint_port(port: dict, c_ports: list[dict]):
    """The pod port a Service port reaches on a selected pod, as the EndpointSlice
    controller decides: a number reaches every selected pod (declared or not); a name
    only the pods declaring it (None: this pod is not an endpoint of the port)."""
    t = port.get("targetPort", port["port"])
    if isinstance(t, int):
        return t
    for cp in c_ports:
        if cp.get("name") == t:
            return cp["containerPort"]
    return None


def check_envoy_bootstrap(boot: dict, ns: str, role: str, f: Failures) -> None:
    f.check(boot.get("node", {}).get("metadata", {}).get("role") == role,
            f"envoy node.metadata.role is {boot.get('node', {}).get('metadata', {}).get('role')!r}, want {role!r}")
    ads = boot.get("dynamic_resources", {}).get("ads_config", {})
    # delta by default (VHDS: one virtual host per route change); sotw on request.
    f.check(ads.get("api_type") in ("DELTA_GRPC", "GRPC"), f"envoy ads_config.api_type is {ads.get('api_type')!r}")
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


def envoy_validate(text: str, f: Failures, sds: dict | None = None, secret: dict | None = None) -> str:
    """`envoy --mode validate` of the bootstrap. With mTLS, the SDS files and the
    certificate it names must exist: both are written to a temporary folder (as the
    pod mounts the ConfigMap and the Secret) and the bootstrap's paths point there."""
    envoy = shutil.which("envoy")
    if not envoy:
        return "envoy not on PATH: bootstrap not validated by Envoy"
    if sds is not None and secret is None:
        return "the proxy's certificate is issued in the cluster (cert-manager): bootstrap not validated by Envoy"
    import base64
    mounts = tempfile.mkdtemp(prefix="kgw-envoy-validate-")
    if sds is not None:
        for sub in ("sds", "tls"):
            os.makedirs(os.path.join(mounts, sub))
        for name, content in (sds.get("data") or {}).items():
            with open(os.path.join(mounts, "sds", name), "w") as fh:
                fh.write(content.replace(MTLS_DIR, os.path.join(mounts, "tls")))
        for name, content in ((secret or {}).get("data") or {}).items():
            with open(os.path.join(mounts, "tls", name), "wb") as fh:
                fh.write(base64.b64decode(content))
        text = text.replace(SDS_DIR, os.path.join(mounts, "sds"))
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
        shutil.rmtree(mounts, ignore_errors=True)


def workload_labels(w: dict) -> dict:
    return w["spec"]["template"]["metadata"]["labels"]


def selects(selector: dict, labels: dict) -> bool:
    return bool(selector) and selector.items() <= labels.items()


def check_workloads(workloads: dict, sas: dict, exp: dict, f: Failures) -> None:
    """Replicas, selectors, image, resources and ServiceAccount of every pod."""
    for name, w in workloads.items():
        spec = w["spec"]
        f.check(spec.get("replicas") == exp["replicas"].get(name, 1),
                f"{w['kind']}/{name} has replicas {spec.get('replicas')}, want {exp['replicas'].get(name, 1)}")
        sel = spec["selector"]["matchLabels"]
        f.check(selects(sel, workload_labels(w)), f"{w['kind']}/{name} selector {sel} does not match its pod labels")
        for other, ow in workloads.items():
            if other != name:
                f.check(not selects(sel, workload_labels(ow)), f"{w['kind']}/{name} selector also matches the pods of {other}")
        cs = spec["template"]["spec"]["containers"]
        f.check(len(cs) == 1, f"{w['kind']}/{name} has {len(cs)} containers, want 1")
        c = cs[0]
        f.check(c.get("image") == exp["images"].get(name),
                f"{w['kind']}/{name} image is {c.get('image')!r}, want {exp['images'].get(name)!r}")
        f.check(bool((c.get("resources") or {}).get("requests")), f"{w['kind']}/{name} has no resource requests")
        pod = spec["template"]["spec"]
        sa = pod.get("serviceAccountName")
        f.check(sa in sas, f"{w['kind']}/{name} uses ServiceAccount {sa!r}, which the chart does not create")
        # Only the pods that talk to the API server carry a token.
        want_token = name in LEAST_PRIVILEGE
        f.check(pod.get("automountServiceAccountToken") == want_token,
                f"{w['kind']}/{name} automountServiceAccountToken is {pod.get('automountServiceAccountToken')}, "
                f"want {want_token}")


def check_our_processes(deps: dict, exp: dict, f: Failures) -> None:
    """Binary, arguments (which must exist on the binaries), env and probes of our four."""
    for name, (_, binary, mon) in OUR_PROCESSES.items():
        if name not in deps:
            continue
        c = container(deps[name])
        args = c.get("args") or []
        f.check(c.get("command") == [binary], f"Deployment/{name} runs {c.get('command')}, want [{binary!r}]")
        f.check(f"--nats-url={exp['nats_url']}" in args, f"Deployment/{name} args {args} lack --nats-url")
        if binary in ("gateway", "discovery", "controller"):
            f.check("--source=kubernetes" in args, f"Deployment/{name} args {args} lack --source=kubernetes")
            for flag, want in (("--namespaces", exp["namespaces"]), ("--label-selector", exp["label_selector"])):
                got = next((a.split("=", 1)[1] for a in args if a.startswith(flag + "=")), "")
                f.check(got == want, f"Deployment/{name} {flag} is {got!r}, want {want!r}")
        check_flags_exist(f, name, binary, args)
        f.check(env_value(c, "KGW_NATS_URL") == exp["nats_url"],
                f"Deployment/{name} env KGW_NATS_URL is {env_value(c, 'KGW_NATS_URL')!r}, want {exp['nats_url']!r}")
        f.check(env_value(c, "OTEL_EXPORTER_OTLP_ENDPOINT") == exp["otlp_endpoint"],
                f"Deployment/{name} env OTEL_EXPORTER_OTLP_ENDPOINT is "
                f"{env_value(c, 'OTEL_EXPORTER_OTLP_ENDPOINT')!r}, want {exp['otlp_endpoint']!r}")
        if binary == "access-log":
            got = env_value(c, "KGW_ACCESS_LOG_OTLP_LOGS_ENDPOINT")
            f.check(got == exp["otlp_logs_endpoint"],
                    f"Deployment/{name} env KGW_ACCESS_LOG_OTLP_LOGS_ENDPOINT is {got!r}, "
                    f"want {exp['otlp_logs_endpoint']!r}")
        ports = c.get("ports") or []
        if mon is None:
            f.check(not ports, f"Deployment/{name} declares container ports {ports}; it listens on nothing")
            live = (c.get("livenessProbe") or {}).get("exec", {}).get("command") or []
            script = " ".join(live)
            f.check("/tmp/kgw-discovery-healthy" in script and "find" in script and "-mmin" in script,
                    f"Deployment/{name} liveness is not an exec probe on a fresh health file: {live}")
            f.check("--health-file=/tmp/kgw-discovery-healthy" in args, f"Deployment/{name} lacks --health-file")
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


def check_nats(stss: dict, exp: dict, f: Failures) -> None:
    if not exp["nats_enabled"]:
        f.check("nats" not in stss, "nats.enabled=false still renders the nats StatefulSet")
        return
    if not f.check("nats" in stss, "StatefulSet/nats is missing"):
        return
    sts = stss["nats"]
    c = container(sts)
    f.check("-js" in (c.get("args") or []), "StatefulSet/nats does not enable JetStream (-js)")
    cports = {p["containerPort"] for p in c.get("ports") or []}
    f.check({4222, 8222} <= cports, f"StatefulSet/nats container ports {cports} lack 4222/8222")
    claims = [t["metadata"]["name"] for t in sts["spec"].get("volumeClaimTemplates") or []]
    empty = [v["name"] for v in sts["spec"]["template"]["spec"].get("volumes") or [] if "emptyDir" in v]
    mounts = [m["name"] for m in c.get("volumeMounts") or []]
    if exp["nats_persistence"]:
        f.check(claims == ["jetstream"] and not empty,
                f"StatefulSet/nats: JetStream store is not a PersistentVolumeClaim (claims {claims}, emptyDirs {empty})")
    else:
        f.check(not claims and empty == ["jetstream"], f"StatefulSet/nats: persistence off but claims {claims}")
    f.check("jetstream" in mounts, "StatefulSet/nats does not mount its JetStream store")


def check_services(svcs: dict, workloads: dict, exp: dict, f: Failures) -> None:
    """Exact legacy ports; each port's endpoints are exactly the pods meant (as the
    EndpointSlice controller computes them: selected pods that declare the target)."""
    want_svcs = set(SERVICE_PORTS) - (set() if exp["nats_enabled"] else {"nats"})
    f.check(set(svcs) == want_svcs, f"Services are {sorted(svcs)}, want {sorted(want_svcs)}")
    for name, svc in svcs.items():
        sel = svc["spec"].get("selector") or {}
        selected = {w: workload for w, workload in workloads.items() if selects(sel, workload_labels(workload))}
        got = set()
        for p in svc["spec"]["ports"]:
            serving = [(w, endpoint_port(p, container(workload).get("ports") or []))
                       for w, workload in selected.items()]
            serving = [(w, t) for w, t in serving if t is not None]
            f.check(len(serving) == 1, f"Service/{name} port {p['port']} reaches {serving}, want one workload")
            got.update((p["port"], w, t) for w, t in serving)
        want = {p for p in SERVICE_PORTS.get(name, ()) if exp["webhook"]["enabled"] or p[1] != "gateway"}
        f.check(got == want, f"Service/{name} ports (port, pods, target) are {sorted(got, key=str)}, "
                             f"want {sorted(want, key=str)}")
        if "discovery" in workloads:
            f.check(not selects(sel, workload_labels(workloads["discovery"])), f"Service/{name} selects the discovery pods")


def check_gateway_proxy(deps: dict, cms: dict, exp: dict, f: Failures, validate_envoy: bool) -> list[str]:
    notes = []
    if "gateway-proxy" not in deps:
        return notes
    gp = deps["gateway-proxy"]
    c = container(gp)
    cports = {p["containerPort"] for p in c.get("ports") or []}
    f.check({8080, 8443, 19000} <= cports, f"Deployment/gateway-proxy container ports {cports} lack 8080/8443/19000")
    config_dir = os.path.dirname(next((a.split("=", 1)[1] for a in c.get("args", [])
                                       if a.startswith("--config-path=")), ""))
    mounted = {m["name"]: m["mountPath"] for m in c.get("volumeMounts") or []}
    cm_names = [v["configMap"]["name"] for v in gp["spec"]["template"]["spec"].get("volumes") or []
                if "configMap" in v and mounted.get(v["name"]) == config_dir]
    f.check(len(cm_names) == 1, f"Deployment/gateway-proxy mounts ConfigMaps {cm_names} at {config_dir}, want 1")
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
        check_envoy_bootstrap(yaml.safe_load(text), exp["namespace"], exp["role"], f)
        if validate_envoy:
            notes.append(envoy_validate(text, f, cms.get("gateway-proxy-sds"), exp.get("proxy_secret")))
    return notes


def check_webhook(by: dict, deps: dict, exp: dict, f: Failures) -> None:
    """The ValidatingWebhookConfiguration and the certificate the gateway serves."""
    ns, w = exp["namespace"], exp["webhook"]
    vwcs = of_kind(by, "ValidatingWebhookConfiguration")
    # The NATS users' Secrets and the mTLS certificates are not the webhook's.
    secrets = {n: d for n, d in of_kind(by, "Secret").items()
               if n not in ("nats-users", "nats-config", "kgw-ca") and not re.fullmatch(r"kgw-.*-tls", n)}
    if not w["enabled"]:
        f.check(not vwcs and not secrets, "webhook.enabled=false still renders the webhook")
        args = container(deps["gateway"]).get("args") or [] if "gateway" in deps else []
        f.check("--webhook-addr=off" in args and not any(a.startswith("--webhook-cert") for a in args),
                "webhook.enabled=false: the gateway must get --webhook-addr=off and no certificate")
        return
    if not f.check(len(vwcs) == 1, f"ValidatingWebhookConfigurations: {sorted(vwcs)}, want 1"):
        return
    hooks = next(iter(vwcs.values()))["webhooks"]
    f.check(len(hooks) == 1, f"{len(hooks)} webhooks, want 1")
    hook = hooks[0]
    svc = hook["clientConfig"].get("service") or {}
    f.check((svc.get("name"), svc.get("namespace"), svc.get("port"), svc.get("path")) == ("gloo", ns, 443, "/validation"),
            f"webhook clientConfig.service is {svc}, want gloo.{ns}:443/validation")
    f.check(hook.get("failurePolicy") == w["failurePolicy"], f"failurePolicy is {hook.get('failurePolicy')}")
    f.check((hook.get("namespaceSelector") or {}) == w["namespaceSelector"],
            f"namespaceSelector is {hook.get('namespaceSelector')}, want {w['namespaceSelector']}")
    f.check(hook.get("sideEffects") == "None" and hook.get("admissionReviewVersions") == ["v1"],
            "webhook sideEffects/admissionReviewVersions are not None/[v1]")
    kinds = {(g, r) for rule in hook.get("rules", []) for g in rule["apiGroups"] for r in rule["resources"]}
    f.check(kinds == WEBHOOK_KINDS, f"webhook kinds are {sorted(kinds)}, want {sorted(WEBHOOK_KINDS)}")

    # The gateway pods mount the Secret and pass its files as --webhook-cert/--webhook-key.
    secret_name = w["existingSecret"] or "gateway-validation-certs"
    gw = deps.get("gateway")
    if gw:
        pod = gw["spec"]["template"]["spec"]
        vols = {v["name"]: v for v in pod.get("volumes") or []}
        c = container(gw)
        mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts") or []}
        cert_vol = next((n for n, v in vols.items() if (v.get("secret") or {}).get("secretName") == secret_name), None)
        if f.check(cert_vol in mounts, f"Deployment/gateway does not mount Secret {secret_name}"):
            args = c.get("args") or []
            for flag, file in (("--webhook-cert", "tls.crt"), ("--webhook-key", "tls.key")):
                f.check(f"{flag}={mounts[cert_vol]}/{file}" in args, f"Deployment/gateway lacks {flag}=.../{file}")
        f.check("--webhook-addr=0.0.0.0:8443" in (c.get("args") or []), "Deployment/gateway lacks --webhook-addr=0.0.0.0:8443")
        f.check(f"--always-accept={str(w['alwaysAccept']).lower()}" in (c.get("args") or []),
                "Deployment/gateway --always-accept does not follow webhook.alwaysAccept")
    ca = hook["clientConfig"].get("caBundle")
    if w["existingSecret"]:
        f.check(secret_name not in secrets, f"the chart renders Secret {secret_name}, which the user manages")
        f.check(ca == (w["caBundle"] or None), f"caBundle is {ca!r}, want webhook.caBundle")
        return
    if not f.check(secret_name in secrets, f"Secret/{secret_name} is not rendered"):
        return
    data = secrets[secret_name].get("data") or {}
    f.check(set(data) == {"tls.crt", "tls.key", "ca.crt"}, f"Secret/{secret_name} keys are {sorted(data)}")
    f.check(ca and ca == data.get("ca.crt"), "the webhook's caBundle is not the Secret's ca.crt")
    f.check(ca and check_cert_chain(data, ns), "the webhook certificate is not signed by its CA for gloo.<ns>.svc")


def check_cert_chain(data: dict, ns: str) -> bool:
    """openssl (when present): tls.crt verifies against ca.crt and names gloo.<ns>.svc."""
    openssl = shutil.which("openssl")
    if not openssl:
        return True
    import base64
    with tempfile.TemporaryDirectory() as d:
        for k in ("tls.crt", "ca.crt"):
            with open(os.path.join(d, k), "wb") as fh:
                fh.write(base64.b64decode(data[k]))
        r = subprocess.run([openssl, "verify", "-CAfile", os.path.join(d, "ca.crt"),
                            "-verify_hostname", f"gloo.{ns}.svc", os.path.join(d, "tls.crt")],
                           capture_output=True, text=True)
        return r.returncode == 0


def check_rbac(by: dict, sas: dict, exp: dict, f: Failures) -> None:
    ns = exp["namespace"]
    roles, bindings = of_kind(by, "ClusterRole"), of_kind(by, "ClusterRoleBinding")
    ns_roles, ns_bindings = of_kind(by, "Role"), of_kind(by, "RoleBinding")
    if not exp["rbac"]:
        f.check(not roles and not bindings and not ns_roles and not ns_bindings,
                "rbac.create=false still renders RBAC")
        return

    def rules_of(role: dict) -> set:
        return {(g, r, tuple(sorted(rule.get("verbs", []))))
                for rule in role.get("rules", []) for g in rule.get("apiGroups", []) for r in rule.get("resources", [])}

    want_roles = {f"kgw-{c}-{ns}": rules for c, rules in LEAST_PRIVILEGE.items()}
    f.check(set(roles) == set(want_roles), f"ClusterRoles are {sorted(roles)}, want {sorted(want_roles)}")
    for name, want in want_roles.items():
        if f.check(name in roles, f"ClusterRole/{name} is missing"):
            got = rules_of(roles[name])
            f.check(got == want, f"ClusterRole/{name}: extra {sorted(got - want)}, missing {sorted(want - got)}")
    bound = {}
    for b in bindings.values():
        ref = b["roleRef"]["name"]
        f.check(ref in roles, f"ClusterRoleBinding/{b['metadata']['name']} refers to missing role {ref}")
        for s in b.get("subjects", []):
            f.check(s.get("kind") == "ServiceAccount" and s.get("name") in sas and s.get("namespace") == ns,
                    f"ClusterRoleBinding/{b['metadata']['name']} subject {s} is not a chart ServiceAccount in {ns}")
            bound.setdefault(s.get("name"), set()).add(ref)
    f.check(bound == {c: {f"kgw-{c}-{ns}"} for c in LEAST_PRIVILEGE},
            f"ServiceAccounts bound to ClusterRoles: {bound}; each component wants its own only")
    f.check(set(ns_roles) == {"gateway-leader-election"}, f"Roles are {sorted(ns_roles)}")
    if "gateway-leader-election" in ns_roles:
        f.check(rules_of(ns_roles["gateway-leader-election"]) == LEASE_RULES, "the gateway's Lease Role is not leases only")
    subjects = [(s["name"], b["roleRef"]["name"]) for b in ns_bindings.values() for s in b.get("subjects", [])]
    f.check(subjects == [("gateway", "gateway-leader-election")], f"RoleBindings bind {subjects}")


def check_pdbs(by: dict, workloads: dict, exp: dict, f: Failures) -> None:
    pdbs = of_kind(by, "PodDisruptionBudget")
    want = set(workloads) if exp["pdbs"] else set()
    f.check(set(pdbs) == want, f"PodDisruptionBudgets are {sorted(pdbs)}, want {sorted(want)}")
    for name, pdb in pdbs.items():
        if name in workloads:
            sel = pdb["spec"]["selector"]["matchLabels"]
            f.check(sel == workloads[name]["spec"]["selector"]["matchLabels"],
                    f"PodDisruptionBudget/{name} does not select exactly the pods of {name}")


NATS_USERS = {"gateway": "gateway", "gloo": "controller", "discovery": "discovery", "access-log": "access-log"}


def check_nats_auth(by: dict, deps: dict, stss: dict, exp: dict, f: Failures) -> None:
    """Each of our processes connects as its own NATS user with its own password; the
    in-chart nats-server is configured with those users (nats.auth, on by default)."""
    secrets = of_kind(by, "Secret")
    f.check("nats-users" in secrets, "Secret/nats-users (the NATS passwords) is missing")
    users = set(secrets.get("nats-users", {}).get("data") or {})
    f.check(users == set(NATS_USERS.values()), f"Secret/nats-users has {sorted(users)}")
    for name, user in NATS_USERS.items():
        if name not in deps:
            continue
        spec = deps[name]["spec"]["template"]["spec"]
        c = container(deps[name])
        f.check(env_value(c, "KGW_NATS_USER") == user, f"Deployment/{name} is not NATS user {user}")
        f.check(env_value(c, "KGW_NATS_PASSWORD_FILE") == "/etc/kgw/nats/password",
                f"Deployment/{name} has no NATS password file")
        volume = next((v for v in spec.get("volumes") or [] if v["name"] == "nats-password"), {})
        items = (volume.get("secret") or {}).get("items") or []
        f.check(items == [{"key": user, "path": "password"}],
                f"Deployment/{name} mounts {items}, want only its own password ({user})")
    if exp["nats_enabled"]:
        conf = (secrets.get("nats-config", {}).get("stringData") or {}).get("nats.conf", "")
        f.check(all(f'user: "{u}"' in conf for u in NATS_USERS.values()), "nats-config lacks a user")
        args = container(stss["nats"]).get("args") or [] if "nats" in stss else []
        f.check("--config=/etc/nats/nats.conf" in args, "StatefulSet/nats does not load its users")


def check_release(docs: list[dict], exp: dict, f: Failures, validate_envoy: bool) -> list[str]:
    ns = exp["namespace"]
    by = index(docs, f)
    deps, stss, svcs = of_kind(by, "Deployment"), of_kind(by, "StatefulSet"), of_kind(by, "Service")
    sas, cms = of_kind(by, "ServiceAccount"), of_kind(by, "ConfigMap")

    for (kind, name), d in by.items():
        if kind in NAMESPACED_KINDS:
            f.check(d["metadata"].get("namespace") == ns, f"{kind}/{name} is not in namespace {ns}")

    want_deps = (set(OUR_PROCESSES) - STATEFUL) | {"gateway-proxy"}
    f.check(set(deps) == want_deps, f"Deployments are {sorted(deps)}, want {sorted(want_deps)}")
    f.check(STATEFUL <= set(stss), f"StatefulSets are {sorted(stss)}, want {sorted(STATEFUL)} among them")
    workloads = {**deps, **stss}
    check_workloads(workloads, sas, exp, f)
    check_our_processes(workloads, exp, f)
    check_access_log_replicas(workloads, svcs, exp, f)
    check_nats(stss, exp, f)
    check_services(svcs, workloads, exp, f)
    proxy_secret = of_kind(by, "Secret").get("kgw-gateway-proxy-tls")
    notes = check_gateway_proxy(deps, cms, {**exp, "proxy_secret": proxy_secret}, f, validate_envoy)
    check_webhook(by, deps, exp, f)
    check_rbac(by, sas, exp, f)
    check_pdbs(by, workloads, exp, f)
    check_nats_auth(by, workloads, stss, exp, f)
    check_mtls(by, workloads, cms, exp, f)
    return notes


def mtls_identities(exp: dict) -> dict[str, tuple[str, set[str]]]:
    """Identity -> (common name, DNS names) of every certificate the chart issues."""
    ns, domain = exp["namespace"], exp["cluster_domain"]

    def svc(name: str) -> set[str]:
        return {name, f"{name}.{ns}", f"{name}.{ns}.svc", f"{name}.{ns}.svc.{domain}"}

    ids = {
        "gateway": ("kgw-process:gateway", {"gateway.kgw.internal"}),
        "controller": ("kgw-process:controller", {"controller.kgw.internal"} | svc("gloo")),
        "discovery": ("kgw-process:discovery", {"discovery.kgw.internal"}),
        "access-log": ("kgw-process:access-log", {"access-log.kgw.internal"} | svc("access-log")
                       | {f"*.access-log-headless.{ns}.svc", f"*.access-log-headless.{ns}.svc.{domain}"}),
        "gateway-proxy": (f"kgw-proxy:{exp['role']}", set()),
        "admin": ("kgw-admin", set()),
    }
    if exp["nats_enabled"]:
        ids["nats"] = ("nats.kgw.internal", {"nats.kgw.internal"} | svc("nats")
                       | {f"*.nats.{ns}.svc", f"*.nats.{ns}.svc.{domain}"})
    return ids


def cert_names(pem_b64: str) -> tuple[str, set[str]] | None:
    """(common name, DNS names) of a base64 PEM certificate, by openssl; None without it."""
    openssl = shutil.which("openssl")
    if not openssl:
        return None
    import base64
    r = subprocess.run([openssl, "x509", "-noout", "-subject", "-nameopt", "multiline", "-ext", "subjectAltName"],
                       input=base64.b64decode(pem_b64), capture_output=True)
    text = r.stdout.decode()
    cn = next((l.split("=", 1)[1].strip() for l in text.splitlines() if l.strip().startswith("commonName")), "")
    return cn, set(re.findall(r"DNS:([^,\s]+)", text))


def cert_signed_by(data: dict) -> bool:
    """openssl (when present): tls.crt verifies against ca.crt, for a client and a server."""
    openssl = shutil.which("openssl")
    if not openssl:
        return True
    import base64
    with tempfile.TemporaryDirectory() as d:
        for k in ("tls.crt", "ca.crt"):
            with open(os.path.join(d, k), "wb") as fh:
                fh.write(base64.b64decode(data[k]))
        return all(subprocess.run([openssl, "verify", "-purpose", purpose, "-CAfile", os.path.join(d, "ca.crt"),
                                   os.path.join(d, "tls.crt")], capture_output=True).returncode == 0
                   for purpose in ("sslclient", "sslserver"))


def check_mtls(by: dict, workloads: dict, cms: dict, exp: dict, f: Failures) -> None:
    """Each pod of ours mounts its own identity's certificate and sets KGW_TLS_DIR (or,
    with mtls.enabled=false, KGW_INSECURE_NO_MTLS=true and nothing of mTLS)."""
    m = exp["mtls"]
    secrets = of_kind(by, "Secret")
    tls_secrets = {n: d for n, d in secrets.items() if n == "kgw-ca" or re.fullmatch(r"kgw-.*-tls", n)}
    issuers, certs = of_kind(by, "Issuer"), of_kind(by, "Certificate")
    boot = yaml.safe_load((cms.get("gateway-proxy-envoy-config", {}).get("data") or {}).get("envoy.yaml", "{}")) or {}
    xds = next(iter((boot.get("static_resources") or {}).get("clusters") or []), {})
    nats_args = (container(workloads["nats"]).get("args") or []) if "nats" in workloads else []
    if not m["enabled"]:
        f.check(not tls_secrets and not issuers and not certs and "gateway-proxy-sds" not in cms,
                f"mtls.enabled=false still renders {sorted(tls_secrets) + sorted(issuers) + sorted(certs)}")
        for name in OUR_PROCESSES:
            if name in workloads:
                c = container(workloads[name])
                f.check(env_value(c, "KGW_INSECURE_NO_MTLS") == "true" and env_value(c, "KGW_TLS_DIR") is None,
                        f"{workloads[name]['kind']}/{name}: mtls.enabled=false wants KGW_INSECURE_NO_MTLS=true only")
        for name, w in workloads.items():
            f.check(all(v["name"] != "mtls" for v in w["spec"]["template"]["spec"].get("volumes") or []),
                    f"{w['kind']}/{name} mounts a certificate with mtls.enabled=false")
        f.check("transport_socket" not in xds, "mtls.enabled=false: Envoy's xDS cluster still speaks TLS")
        f.check(not any(a.startswith("--tls") for a in nats_args), "mtls.enabled=false: nats-server still wants TLS")
        return

    ids = mtls_identities(exp)
    for name, who in MTLS_WORKLOADS.items():
        if name not in workloads:
            continue
        w = workloads[name]
        c = container(w)
        vols = {v["name"]: v for v in w["spec"]["template"]["spec"].get("volumes") or []}
        secret = (vols.get("mtls", {}).get("secret") or {}).get("secretName")
        f.check(secret == f"kgw-{who}-tls", f"{w['kind']}/{name} mounts certificate Secret {secret!r}, "
                                            f"want kgw-{who}-tls")
        mounts = {mm["name"]: mm["mountPath"] for mm in c.get("volumeMounts") or []}
        f.check(mounts.get("mtls") == MTLS_DIR, f"{w['kind']}/{name} mounts its certificate at "
                                                f"{mounts.get('mtls')!r}, want {MTLS_DIR}")
        if name in OUR_PROCESSES:
            f.check(env_value(c, "KGW_TLS_DIR") == MTLS_DIR and env_value(c, "KGW_INSECURE_NO_MTLS") is None,
                    f"{w['kind']}/{name}: KGW_TLS_DIR is {env_value(c, 'KGW_TLS_DIR')!r}, want {MTLS_DIR}")
    if "gateway-proxy" in workloads:
        gp = workloads["gateway-proxy"]
        vols = {v["name"]: v for v in gp["spec"]["template"]["spec"].get("volumes") or []}
        mounts = {mm["name"]: mm["mountPath"] for mm in container(gp).get("volumeMounts") or []}
        sds_vol = next((n for n, v in vols.items() if (v.get("configMap") or {}).get("name") == "gateway-proxy-sds"), None)
        f.check(sds_vol is not None and mounts.get(sds_vol) == SDS_DIR,
                f"Deployment/gateway-proxy does not mount ConfigMap gateway-proxy-sds at {SDS_DIR}")
        sds = cms.get("gateway-proxy-sds", {}).get("data") or {}
        f.check(set(sds) == {"sds-cert.json", "sds-ca.json"}, f"ConfigMap/gateway-proxy-sds has {sorted(sds)}")
        for file, want in (("sds-cert.json", f"{MTLS_DIR}/tls.crt"), ("sds-ca.json", f"{MTLS_DIR}/ca.crt")):
            f.check(want in sds.get(file, ""), f"ConfigMap/gateway-proxy-sds {file} does not name {want}")
        tls = (xds.get("transport_socket") or {}).get("typedConfig") or {}
        f.check(tls.get("sni") == "controller.kgw.internal",
                f"Envoy's xDS cluster does not speak TLS to controller.kgw.internal: {xds.get('transport_socket')}")
        f.check(f"{SDS_DIR}/sds-cert.json" in str(tls) and f"{SDS_DIR}/sds-ca.json" in str(tls),
                "Envoy's xDS TLS does not take its certificate from the SDS files")
    if exp["nats_enabled"] and "nats" in workloads:
        vols = {v["name"]: v for v in workloads["nats"]["spec"]["template"]["spec"].get("volumes") or []}
        mounts = {mm["name"]: mm["mountPath"] for mm in container(workloads["nats"]).get("volumeMounts") or []}
        tls_vol = next((n for n, v in vols.items() if (v.get("secret") or {}).get("secretName") == "kgw-nats-tls"), None)
        f.check(tls_vol in mounts, "StatefulSet/nats does not mount Secret kgw-nats-tls")
        d = mounts.get(tls_vol, "?")
        for flag in ("--tlsverify", f"--tlscert={d}/tls.crt", f"--tlskey={d}/tls.key", f"--tlscacert={d}/ca.crt"):
            f.check(flag in nats_args, f"StatefulSet/nats args lack {flag}: {nats_args}")

    if m["certManager"]["enabled"]:
        f.check(not tls_secrets, f"with cert-manager the chart renders certificate Secrets {sorted(tls_secrets)}")
        f.check(set(issuers) == {"kgw-ca-issuer"} and
                (issuers.get("kgw-ca-issuer", {}).get("spec", {}).get("ca") or {}).get("secretName")
                == m["certManager"]["caSecretName"], f"Issuers {sorted(issuers)} do not sign with the CA Secret")
        f.check(set(certs) == {f"kgw-{who}-tls" for who in ids}, f"Certificates are {sorted(certs)}")
        for who, (cn, dns) in ids.items():
            spec = certs.get(f"kgw-{who}-tls", {}).get("spec") or {}
            f.check(spec.get("secretName") == f"kgw-{who}-tls" and spec.get("commonName") == cn
                    and set(spec.get("dnsNames") or []) == dns
                    and {"client auth", "server auth"} <= set(spec.get("usages") or [])
                    and (spec.get("issuerRef") or {}).get("name") == "kgw-ca-issuer",
                    f"Certificate/kgw-{who}-tls is {spec}, want CN {cn!r}, DNS {sorted(dns)}")
        return
    f.check(not issuers and not certs, "without cert-manager the chart renders cert-manager resources")
    ca = (secrets.get("kgw-ca", {}).get("data") or {}).get("tls.crt")
    f.check(bool(ca), "Secret/kgw-ca (the mTLS CA) is missing")
    f.check(set(tls_secrets) == {"kgw-ca"} | {f"kgw-{who}-tls" for who in ids},
            f"certificate Secrets are {sorted(tls_secrets)}")
    for who, (cn, dns) in ids.items():
        secret = tls_secrets.get(f"kgw-{who}-tls")
        if not f.check(secret is not None, f"Secret/kgw-{who}-tls is missing"):
            continue
        data = secret.get("data") or {}
        f.check(secret.get("type") == "kubernetes.io/tls" and set(data) == {"tls.crt", "tls.key", "ca.crt"},
                f"Secret/kgw-{who}-tls is {secret.get('type')} with {sorted(data)}")
        f.check(data.get("ca.crt") == ca, f"Secret/kgw-{who}-tls ca.crt is not the CA of Secret kgw-ca")
        names = cert_names(data.get("tls.crt", ""))
        if names is not None:
            f.check(names == (cn, dns), f"Secret/kgw-{who}-tls names {names}, want ({cn!r}, {sorted(dns)})")
        f.check(cert_signed_by(data), f"Secret/kgw-{who}-tls is not signed by its ca.crt for client and server use")


def check_access_log_replicas(workloads: dict, svcs: dict, exp: dict, f: Failures) -> None:
    """Each access-log replica has a stable name under the headless Service, and gloo
    gives Envoy every one (Envoy sends every entry to each replica)."""
    sts = workloads.get("access-log")
    if not sts or "gloo" not in workloads:
        return
    f.check(sts["spec"].get("serviceName") == "access-log-headless",
            f"StatefulSet/access-log serviceName is {sts['spec'].get('serviceName')!r}, want 'access-log-headless'")
    headless = svcs.get("access-log-headless", {})
    f.check(headless.get("spec", {}).get("clusterIP") == "None", "Service/access-log-headless is not headless")
    suffix = f"{exp['namespace']}.svc.{exp['cluster_domain']}"
    want = ",".join(f"access-log-{i}.access-log-headless.{suffix}:8083" for i in range(exp["replicas"]["access-log"]))
    args = container(workloads["gloo"]).get("args") or []
    got = next((a.split("=", 1)[1] for a in args if a.startswith("--access-log-addr=")), None)
    f.check(got == want, f"Deployment/gloo --access-log-addr is {got!r}, want {want!r}")
    c = container(sts)
    drain = next((int(a.split("=", 1)[1]) for a in c.get("args") or [] if a.startswith("--drain-seconds=")), 0)
    grace = sts["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
    f.check(grace > drain + 5, f"StatefulSet/access-log grace {grace}s leaves no time for a {drain}s drain")


def check_crds(chart: str, f: Failures) -> str:
    """crds/ (installed by helm before the templates): ours and the Gateway API's."""
    names = set()
    for root, _, files in os.walk(os.path.join(chart, "crds")):
        for file in files:
            if file.endswith((".yaml", ".yml")):
                with open(os.path.join(root, file)) as fh:
                    for doc in yaml.safe_load_all(fh):
                        if doc and doc.get("kind") == "CustomResourceDefinition":
                            names.add(doc["metadata"]["name"])
    for want in ("routeoptions.gateway.solo.io", "upstreams.gloo.solo.io", "gatewayclasses.gateway.networking.k8s.io",
                 "gateways.gateway.networking.k8s.io", "httproutes.gateway.networking.k8s.io",
                 "referencegrants.gateway.networking.k8s.io"):
        f.check(want in names, f"crds/ lacks the CRD {want}")
    return f"crds/: {len(names)} CRDs"


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
        "nats_persistence": v["nats"]["persistence"]["enabled"],
        "rbac": v["rbac"]["create"],
        "role": f"{gp['gatewayNamespace'] or namespace}~{gp['gatewayName']}",
        "namespaces": ",".join(v["watchNamespaces"]),
        "label_selector": v["labelSelector"],
        "webhook": v["webhook"],
        "pdbs": v["podDisruptionBudget"]["enabled"],
        "cluster_domain": v["clusterDomain"],
        "mtls": v["mtls"],
        "otlp_endpoint": v["tracing"]["otlpEndpoint"] or None,
        "otlp_logs_endpoint": v["accessLog"]["otlpLogsEndpoint"] or None,
    }


CASES = [
    # (label, release name, namespace, values, hard-coded expectations to cross-check)
    ("defaults", "kgw", "gloo-system", {}, {
        "replicas": {"discovery": 1, "gateway": 1, "access-log": 2},
        "images": {"gateway-proxy": "envoyproxy/envoy:v1.40.0", "gloo": "kgw/controller:0.1.0"},
        "role": "gloo-system~gateway-proxy",
        "nats_url": "nats://nats.gloo-system.svc.cluster.local:4222",
        "nats_persistence": True,
    }),
    ("overrides", "edge", "kgw-test", {
        "discovery": {"replicas": 3},
        "accessLog": {"replicas": 3, "otlpLogsEndpoint": "http://otel-collector.observability:4317"},
        "gateway": {"image": {"tag": "1.2.3"}},
        "gloo": {"image": {"repository": "example.invalid/kgw/controller", "tag": "dev"}},
        "gatewayProxy": {"gatewayName": "public", "gatewayNamespace": "apps", "replicas": 2},
        "webhook": {"failurePolicy": "Fail", "namespaceSelector": {"matchLabels": {"kgw.dev/validate": "true"}},
                    "alwaysAccept": False},
        "nats": {"persistence": {"enabled": False}},
        "watchNamespaces": ["apps", "web"],
        "labelSelector": "team=edge",
        "tracing": {"otlpEndpoint": "http://otel-collector.observability:4317"},
    }, {
        "replicas": {"discovery": 3, "gateway-proxy": 2, "gloo": 1, "access-log": 3},
        "images": {"gateway": "kgw/gateway:1.2.3", "gloo": "example.invalid/kgw/controller:dev"},
        "role": "apps~public",
        "nats_url": "nats://nats.kgw-test.svc.cluster.local:4222",
        "namespaces": "apps,web",
        "label_selector": "team=edge",
    }),
    ("external-nats-no-rbac", "kgw", "gloo-system", {
        "nats": {"enabled": False, "url": "nats://broker.messaging:4222"},
        "rbac": {"create": False},
        "webhook": {"existingSecret": "my-webhook-tls", "caBundle": "Q0EK"},
    }, {
        "nats_url": "nats://broker.messaging:4222",
        "nats_enabled": False,
        "rbac": False,
    }),
    ("webhook-and-pdbs-off", "kgw", "gloo-system", {
        "webhook": {"enabled": False},
        "podDisruptionBudget": {"enabled": False},
    }, {
        "pdbs": False,
    }),
    ("mtls-off", "kgw", "gloo-system", {"mtls": {"enabled": False}}, {
        "mtls": {"enabled": False, "certValidityDays": 3650,
                 "certManager": {"enabled": False, "caSecretName": "kgw-ca", "duration": "2160h",
                                 "renewBefore": "360h"}},
    }),
    ("mtls-cert-manager", "kgw", "edge", {
        "mtls": {"certManager": {"enabled": True, "caSecretName": "corp-ca"}},
        "clusterDomain": "example.internal",
    }, {
        "cluster_domain": "example.internal",
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
    f.context = "crds"
    print(f"  {check_crds(chart, f)}")

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
