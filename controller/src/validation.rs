//! Validation gRPC (port 9988, as Gloo's): a dry run of a Proxy through the same
//! `translate::translate` that serves Envoy, with the controller's current Upstreams (plus
//! the request's, minus its deleted ones), without applying anything. The answer lists the
//! problems (errors and warnings, each with its path and source resource) and, when asked,
//! the Envoy resources as JSON. The service reads the state through [`TranslationInputs`].
use std::{collections::BTreeMap, sync::Arc};

use envoy_types::util::pack_any;
use kgw_proto::v1::{
    self as pb,
    validation_service_server::{ValidationService, ValidationServiceServer},
};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::{
    actor::Published,
    json,
    metrics::ControllerMetrics,
    proxies::ServedProblems,
    translate::{self, EnvoyResources, Settings},
};

/// What a translation needs besides the Proxy: the current Upstreams (by KV key) and the
/// settings (access-log address, WASM cache state).
pub(crate) trait TranslationInputs: Send + Sync + 'static {
    fn upstreams(&self) -> Arc<BTreeMap<String, pb::Upstream>>;
    fn settings(&self) -> Arc<Settings>;
    /// The problems of the Proxy served under `key`, if it is the state `digest` names.
    fn served_problems(&self, key: &str, digest: &str) -> ServedProblems;
}

impl TranslationInputs for watch::Receiver<Published> {
    fn upstreams(&self) -> Arc<BTreeMap<String, pb::Upstream>> {
        self.borrow().upstreams.clone()
    }
    fn settings(&self) -> Arc<Settings> {
        self.borrow().settings.clone()
    }
    fn served_problems(&self, key: &str, digest: &str) -> ServedProblems {
        let proxies = self.borrow().proxies.clone();
        proxies.served_problems(key, digest)
    }
}

pub(crate) struct Validation<S> {
    inputs: S,
    metrics: Arc<ControllerMetrics>,
}

impl<S: TranslationInputs> Validation<S> {
    pub(crate) fn new(inputs: S) -> Self {
        Self {
            inputs,
            metrics: Arc::default(),
        }
    }

    /// Counts requests into `metrics` (else into a private set nobody reads).
    pub(crate) fn with_metrics(mut self, metrics: Arc<ControllerMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    pub(crate) fn into_server(self) -> ValidationServiceServer<Self> {
        ValidationServiceServer::new(self)
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024)
    }
}

#[tonic::async_trait]
impl<S: TranslationInputs> ValidationService for Validation<S> {
    async fn validate(&self, request: Request<pb::ValidateRequest>) -> Result<Response<pb::ValidateResponse>, Status> {
        let answer = self.dry_run(request.into_inner()).await;
        self.metrics
            .validated("dry_run", if answer.is_ok() { "ok" } else { "invalid" });
        answer.map(Response::new)
    }

    async fn served_problems(
        &self,
        request: Request<pb::ServedProblemsRequest>,
    ) -> Result<Response<pb::ValidateResponse>, Status> {
        let answer = self.served(request.into_inner());
        let label = match &answer {
            Ok(_) => "ok",
            Err(status) if status.code() == tonic::Code::FailedPrecondition => "not_yet",
            Err(_) => "invalid",
        };
        self.metrics.validated("served", label);
        answer.map(Response::new)
    }
}

impl<S: TranslationInputs> Validation<S> {
    /// `Validate`: a dry run of the request's Proxy.
    async fn dry_run(&self, request: pb::ValidateRequest) -> Result<pb::ValidateResponse, Status> {
        let proxy = request
            .proxy
            .ok_or_else(|| Status::invalid_argument("ValidateRequest.proxy is required"))?;
        let mut upstreams = self.inputs.upstreams();
        // Copied only when the request changes them (the gateway's background checks do not).
        if !request.upstreams.is_empty() || !request.deleted_upstreams.is_empty() {
            let edited = Arc::make_mut(&mut upstreams);
            for (i, upstream) in request.upstreams.into_iter().enumerate() {
                let meta = upstream.metadata.clone().unwrap_or_default();
                if meta.name.is_empty() || meta.namespace.is_empty() {
                    return Err(Status::invalid_argument(format!(
                        "ValidateRequest.upstreams[{i}].metadata needs a namespace and a name (got {:?}/{:?})",
                        meta.namespace, meta.name
                    )));
                }
                edited.insert(kgw_proto::nats::key(&meta.namespace, &meta.name), upstream);
            }
            for deleted in &request.deleted_upstreams {
                edited.remove(&kgw_proto::nats::key(&deleted.namespace, &deleted.name));
            }
        }
        let settings = self.inputs.settings();
        let include = request.include_resources;
        let meta = proxy.metadata.clone().unwrap_or_default();
        // Translation is CPU work: off the async workers.
        let (problems, resources_json) = tokio::task::spawn_blocking(move || {
            if include {
                let (resources, problems) = translate::translate(&proxy, &upstreams, &settings);
                (problems, resources_as_json(&resources))
            } else {
                (translate::problems(&proxy, &upstreams, &settings), Ok(Vec::new()))
            }
        })
        .await
        .map_err(|error| {
            Status::internal(format!(
                "validation of proxy {}/{} failed: {error}",
                meta.namespace, meta.name
            ))
        })?;
        let resources_json = resources_json.map_err(|error| {
            Status::internal(format!(
                "cannot render the Envoy resources of proxy {}/{}: {error}",
                meta.namespace, meta.name
            ))
        })?;
        let problems: Vec<pb::Problem> = problems.into_iter().map(translate::Problem::to_proto).collect();
        tracing::debug!(
            proxy = %format!("{}/{}", meta.namespace, meta.name),
            errors = problems.iter().filter(|p| p.severity == pb::problem::Severity::Error as i32).count(),
            warnings = problems.iter().filter(|p| p.severity == pb::problem::Severity::Warning as i32).count(),
            "validated proxy"
        );
        Ok(pb::ValidateResponse {
            problems,
            resources_json,
        })
    }

    /// `ServedProblems`: answered from the last translation, without a dry run.
    fn served(&self, request: pb::ServedProblemsRequest) -> Result<pb::ValidateResponse, Status> {
        if request.proxy_key.is_empty() || request.digest.is_empty() {
            return Err(Status::invalid_argument(
                "ServedProblemsRequest needs a proxy_key and a digest",
            ));
        }
        match self.inputs.served_problems(&request.proxy_key, &request.digest) {
            ServedProblems::Found(problems) => Ok(pb::ValidateResponse {
                problems: problems.iter().cloned().map(translate::Problem::to_proto).collect(),
                resources_json: Vec::new(),
            }),
            ServedProblems::NotYet => Err(Status::failed_precondition(format!(
                "proxy {} is not translated at digest {} (yet)",
                request.proxy_key, request.digest
            ))),
        }
    }
}

/// Every resource as proto3 JSON with its `"@type"`: listeners, routes, clusters, endpoints.
fn resources_as_json(resources: &EnvoyResources) -> Result<Vec<String>, json::JsonError> {
    let anys = (resources.listeners.iter().map(|r| pack_any(r.clone())))
        .chain(resources.routes.iter().map(|r| pack_any(r.clone())))
        .chain(resources.clusters.iter().map(|r| pack_any(r.clone())))
        .chain(resources.endpoints.iter().map(|r| pack_any(r.clone())));
    anys.map(|any| json::any_to_json(&any).map(|value| value.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use kgw_proto::v1::validation_service_client::ValidationServiceClient;

    use super::*;
    use crate::translate::wasm::WasmModules;

    struct Inputs(Arc<BTreeMap<String, pb::Upstream>>, crate::proxies::ProxiesView);

    impl TranslationInputs for Inputs {
        fn served_problems(&self, key: &str, digest: &str) -> ServedProblems {
            self.1.served_problems(key, digest)
        }
        fn upstreams(&self) -> Arc<BTreeMap<String, pb::Upstream>> {
            self.0.clone()
        }
        fn settings(&self) -> Arc<Settings> {
            Arc::new(Settings {
                access_log_addresses: Vec::new(),
                wasm: WasmModules::default(),
                proxy_tls: None,
                secrets: Default::default(),
            })
        }
    }

    fn upstream(namespace: &str, name: &str) -> pb::Upstream {
        pb::Upstream {
            metadata: Some(pb::Metadata {
                namespace: namespace.into(),
                name: name.into(),
                ..Default::default()
            }),
            upstream_type: Some(pb::upstream::UpstreamType::Static(pb::StaticUpstream {
                hosts: vec![pb::HostPort {
                    address: "127.0.0.1".into(),
                    port: 9001,
                    ..Default::default()
                }],
                use_tls: false,
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    fn upstream_ref(namespace: &str, name: &str) -> pb::ResourceRef {
        pb::ResourceRef {
            kind: "Upstream".into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    fn route(name: &str, path: pb::matcher::PathSpecifier, upstream: &str) -> pb::Route {
        pb::Route {
            name: name.into(),
            matchers: vec![pb::Matcher {
                path_specifier: Some(path),
                ..Default::default()
            }],
            action: Some(pb::route::Action::RouteAction(pb::RouteAction {
                destination: Some(pb::route_action::Destination::Single(pb::Destination {
                    upstream: Some(upstream_ref("default", upstream)),
                    filters: Vec::new(),
                    tls: None,
                })),
            })),
            source: Some(pb::ResourceRef {
                kind: "HTTPRoute".into(),
                namespace: "default".into(),
                name: format!("httproute-{name}"),
            }),
            ..Default::default()
        }
    }

    fn proxy(routes: Vec<pb::Route>) -> pb::Proxy {
        pb::Proxy {
            metadata: Some(pb::Metadata {
                namespace: "default".into(),
                name: "gw".into(),
                ..Default::default()
            }),
            listeners: vec![pb::Listener {
                name: "listener~8080".into(),
                bind_address: "127.0.0.1".into(),
                bind_port: 8080,
                listener_type: Some(pb::listener::ListenerType::HttpListener(pb::HttpListener {
                    virtual_hosts: vec![pb::VirtualHost {
                        name: "vh".into(),
                        domains: vec!["*".into()],
                        routes,
                    }],
                })),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn prefix(p: &str) -> pb::matcher::PathSpecifier {
        pb::matcher::PathSpecifier::Prefix(p.into())
    }

    async fn client() -> (
        ValidationServiceClient<tonic::transport::Channel>,
        kgw_common::shutdown::Shutdown,
    ) {
        client_of(crate::proxies::ProxiesView::default()).await
    }

    async fn client_of(
        proxies: crate::proxies::ProxiesView,
    ) -> (
        ValidationServiceClient<tonic::transport::Channel>,
        kgw_common::shutdown::Shutdown,
    ) {
        let upstreams = BTreeMap::from([("default.echo".to_string(), upstream("default", "echo"))]);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = kgw_common::shutdown::Shutdown::new();
        let stop = shutdown.clone();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(Validation::new(Inputs(Arc::new(upstreams), proxies)).into_server())
                .serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(listener), async move {
                    stop.wait().await
                }),
        );
        let client = ValidationServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        (client, shutdown)
    }

    fn validate(proxy: pb::Proxy) -> pb::ValidateRequest {
        pb::ValidateRequest {
            proxy: Some(proxy),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn served_problems_answer_for_the_state_held_else_failed_precondition() {
        use bytes::Bytes;
        use prost::Message as _;
        let mut store = crate::proxies::ProxyStore::default();
        let (mut client, _stop) = client_of(store.view()).await;
        let served = proxy(vec![route("r1", prefix("/echo"), "echo")]);
        let (head, parts) = kgw_common::proxy_parts::split("default.gw", &served);
        let mut values = BTreeMap::from([("default.gw".to_string(), Bytes::from(head.encode_to_vec()))]);
        values.extend(parts.into_iter().map(|(k, p)| (k, Bytes::from(p.encode_to_vec()))));
        let digest = kgw_common::proxy_parts::digests(&values)["default.gw"].clone();
        store.apply(vec![kgw_common::bus::KvEvent::Full(values)]);
        let ask = |digest: &str| pb::ServedProblemsRequest {
            proxy_key: "default.gw".into(),
            digest: digest.into(),
        };

        let early = client.served_problems(ask(&digest)).await.unwrap_err();
        assert_eq!(early.code(), tonic::Code::FailedPrecondition, "{early:?}");

        let (_, problems) = translate::translate(
            &served,
            &BTreeMap::new(),
            &Inputs(Arc::default(), store.view()).settings(),
        );
        assert_eq!(problems.len(), 1, "the Upstream is missing: {problems:?}");
        store.record_served("default.gw", Some(problems));
        let response = client.served_problems(ask(&digest)).await.unwrap().into_inner();
        assert_eq!(response.problems.len(), 1, "{:?}", response.problems);
        assert!(
            response.problems[0].message.contains("default/echo"),
            "{:?}",
            response.problems
        );

        let other = client.served_problems(ask("0000")).await.unwrap_err();
        assert_eq!(other.code(), tonic::Code::FailedPrecondition);
        let empty = client.served_problems(ask("")).await.unwrap_err();
        assert_eq!(empty.code(), tonic::Code::InvalidArgument);
    }

    #[tokio::test]
    async fn valid_proxy_has_no_problems() {
        let (mut client, _stop) = client().await;
        let response = client
            .validate(validate(proxy(vec![route("r1", prefix("/echo"), "echo")])))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(response.problems, vec![]);
        assert!(response.resources_json.is_empty(), "resources only when asked");
    }

    #[tokio::test]
    async fn invalid_regex_is_an_error_naming_route_and_pattern() {
        let (mut client, _stop) = client().await;
        let bad = route(
            "bad-regex",
            pb::matcher::PathSpecifier::Regex("/items/(".into()),
            "echo",
        );
        let good = route("good", prefix("/"), "echo");
        let response = client
            .validate(validate(proxy(vec![bad, good])))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(response.problems.len(), 1, "{:?}", response.problems);
        let p = &response.problems[0];
        assert_eq!(p.severity, pb::problem::Severity::Error as i32);
        assert_eq!(p.path, "listener/listener~8080/vhost/vh/route/bad-regex");
        assert_eq!(p.source.as_ref().unwrap().name, "httproute-bad-regex");
        assert!(
            p.message.contains("route bad-regex") && p.message.contains("\"/items/(\""),
            "{}",
            p.message
        );
    }

    #[tokio::test]
    async fn missing_upstream_is_a_warning_and_request_upstreams_count() {
        let (mut client, _stop) = client().await;
        let missing = proxy(vec![route("r1", prefix("/"), "nowhere")]);
        let response = client.validate(validate(missing.clone())).await.unwrap().into_inner();
        assert_eq!(response.problems.len(), 1, "{:?}", response.problems);
        assert_eq!(response.problems[0].severity, pb::problem::Severity::Warning as i32);
        assert!(
            response.problems[0].message.contains("default/nowhere"),
            "{}",
            response.problems[0].message
        );

        // The request's own Upstreams join the controller's for this dry run.
        let with_upstream = pb::ValidateRequest {
            upstreams: vec![upstream("default", "nowhere")],
            ..validate(missing)
        };
        assert_eq!(
            client.validate(with_upstream).await.unwrap().into_inner().problems,
            vec![]
        );

        // Deleting one the controller has: routes that use it are warned about.
        let deleted = pb::ValidateRequest {
            deleted_upstreams: vec![upstream_ref("default", "echo")],
            ..validate(proxy(vec![route("r1", prefix("/"), "echo")]))
        };
        let problems = client.validate(deleted).await.unwrap().into_inner().problems;
        assert_eq!(problems.len(), 1);
        assert!(problems[0].message.contains("default/echo"), "{}", problems[0].message);
    }

    #[tokio::test]
    async fn include_resources_returns_envoy_json() {
        let (mut client, _stop) = client().await;
        let request = pb::ValidateRequest {
            include_resources: true,
            ..validate(proxy(vec![route("r1", prefix("/echo"), "echo")]))
        };
        let response = client.validate(request).await.unwrap().into_inner();
        let resources: Vec<serde_json::Value> = response
            .resources_json
            .iter()
            .map(|j| serde_json::from_str(j).unwrap())
            .collect();
        let listener = resources
            .iter()
            .find(|r| r["@type"] == "type.googleapis.com/envoy.config.listener.v3.Listener")
            .expect("a Listener");
        assert_eq!(listener["name"], "listener~8080");
        assert_eq!(listener["address"]["socketAddress"]["portValue"], 8080);
        let route_config = resources
            .iter()
            .find(|r| r["@type"] == "type.googleapis.com/envoy.config.route.v3.RouteConfiguration")
            .expect("a RouteConfiguration");
        assert_eq!(
            route_config["virtualHosts"][0]["routes"][0]["route"]["cluster"],
            "echo_default"
        );
        assert!(
            resources.iter().any(|r| r["name"] == "echo_default"),
            "the cluster of the route's upstream: {resources:?}"
        );
    }

    #[tokio::test]
    async fn missing_proxy_is_invalid_argument() {
        let (mut client, _stop) = client().await;
        let status = client.validate(pb::ValidateRequest::default()).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status.message().contains("ValidateRequest.proxy"),
            "{}",
            status.message()
        );
    }
}
