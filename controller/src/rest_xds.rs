//! REST xDS (port 9976, as Gloo's): `POST /v3/discovery:{listeners,routes,clusters,endpoints,secrets}`
//! with a JSON `DiscoveryRequest` answers a JSON `DiscoveryResponse` (proto3 JSON mapping,
//! every `Any` expanded) of the same snapshot ADS serves. The node's metadata `role` picks
//! the snapshot; a request whose `version_info` is the current version of its type gets
//! `304 Not Modified`, as Envoy's REST subscriptions expect. JSON is read and written
//! through the Envoy descriptor pool (`crate::json`); the server sees the state only
//! through [`SnapshotSource`].
use bytes::Bytes;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, body::Incoming, header};
use kgw_common::{
    serve::HttpHandler,
    tls::{ConnInfo, Peer},
};
use prost_reflect::DynamicMessage;

use crate::{
    json::{self, JsonError},
    xds::{
        SnapshotSource,
        ads::node_role,
        snapshot::{CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET},
    },
};

/// The paths served, and the resource type each answers with.
pub const PATHS: [(&str, &str); 5] = [
    ("/v3/discovery:listeners", LISTENER),
    ("/v3/discovery:routes", ROUTE),
    ("/v3/discovery:clusters", CLUSTER),
    ("/v3/discovery:endpoints", ENDPOINT),
    ("/v3/discovery:secrets", SECRET),
];

/// Largest request body read: a DiscoveryRequest is a node and some names.
pub const MAX_BODY: usize = 4 * 1024 * 1024;

const REQUEST_TYPE: &str = "envoy.service.discovery.v3.DiscoveryRequest";

#[derive(Debug, thiserror::Error)]
pub enum RestXdsError {
    #[error("no REST xDS endpoint {0:?}; POST to /v3/discovery:listeners, :routes, :clusters, :endpoints or :secrets")]
    NoSuchPath(String),
    #[error("method {0} is not allowed; use POST")]
    Method(Method),
    #[error("the request body is larger than {MAX_BODY} bytes")]
    TooLarge,
    #[error("cannot read the request body: {0}")]
    Body(String),
    #[error("invalid DiscoveryRequest JSON at {path}: {message}")]
    BadJson { path: String, message: String },
    #[error("DiscoveryRequest.node.metadata.role is missing: it names the gateway, <namespace>~<name>")]
    NoRole,
    #[error("DiscoveryRequest.typeUrl is {got:?} but {path} serves {expected}")]
    TypeUrl {
        got: String,
        path: &'static str,
        expected: &'static str,
    },
    #[error("{peer} may not read the config of role {role}")]
    Forbidden { peer: String, role: String },
    #[error("unknown role {0:?}: the controller holds no Proxy for this gateway (<namespace>~<name>)")]
    UnknownRole(String),
    #[error("cannot convert to or from JSON")]
    Json(#[from] JsonError),
}

impl RestXdsError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NoSuchPath(_) | Self::UnknownRole(_) => StatusCode::NOT_FOUND,
            Self::Method(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Body(_) | Self::BadJson { .. } | Self::NoRole | Self::TypeUrl { .. } => StatusCode::BAD_REQUEST,
            Self::Json(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// `{"code": <HTTP status>, "message": "..."}` (the shape of a JSON `google.rpc.Status`).
    pub fn body(&self) -> serde_json::Value {
        let mut message = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            message.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        serde_json::json!({ "code": self.status().as_u16(), "message": message })
    }
}

/// What a discovery request gets.
#[derive(Debug, PartialEq)]
pub enum Reply {
    /// The DiscoveryResponse as proto3 JSON.
    Resources(serde_json::Value),
    /// The client already has the current version.
    NotModified,
}

/// Parses a JSON DiscoveryRequest (proto3 JSON mapping, strict: an unknown field is an
/// error naming it).
pub fn parse_request(body: &[u8]) -> Result<DiscoveryRequest, RestXdsError> {
    let descriptor = json::pool()?
        .get_message_by_name(REQUEST_TYPE)
        .ok_or_else(|| JsonError::UnknownType(REQUEST_TYPE.into()))?;
    let mut json = serde_json::Deserializer::from_slice(body);
    let mut track = serde_path_to_error::Track::new();
    let parsed = DynamicMessage::deserialize(
        descriptor,
        serde_path_to_error::Deserializer::new(&mut json, &mut track),
    );
    let bad = |track: serde_path_to_error::Track, error: serde_json::Error| RestXdsError::BadJson {
        path: track.path().to_string(),
        message: error.to_string(),
    };
    let message = match parsed {
        Ok(message) => message,
        Err(error) => return Err(bad(track, error)),
    };
    json.end().map_err(|error| bad(track, error))?;
    message
        .transcode_to::<DiscoveryRequest>()
        .map_err(|error| RestXdsError::BadJson {
            path: ".".into(),
            message: error.to_string(),
        })
}

/// Answers one discovery request for `path` from the current snapshot of the node's role,
/// if `peer` may read that role.
pub fn discover<S: SnapshotSource>(peer: &Peer, source: &S, path: &str, body: &[u8]) -> Result<Reply, RestXdsError> {
    let (path, type_url) = PATHS
        .iter()
        .find(|(p, _)| *p == path)
        .copied()
        .ok_or_else(|| RestXdsError::NoSuchPath(path.to_string()))?;
    let request = parse_request(body)?;
    if !request.type_url.is_empty() && request.type_url != type_url {
        return Err(RestXdsError::TypeUrl {
            got: request.type_url,
            path,
            expected: type_url,
        });
    }
    let role = request.node.as_ref().and_then(node_role).ok_or(RestXdsError::NoRole)?;
    if !peer.allows(|identity| identity.may_read_role(&role)) {
        return Err(RestXdsError::Forbidden {
            peer: peer.to_string(),
            role,
        });
    }
    let snapshot = source
        .snapshot(&role)
        .ok_or_else(|| RestXdsError::UnknownRole(role.clone()))?;
    let empty = Default::default();
    let resources = snapshot.resources(type_url).unwrap_or(&empty);
    // As ADS: a type without resources has version "empty".
    let version = if resources.version.is_empty() {
        "empty"
    } else {
        resources.version.as_str()
    };
    if request.version_info == version {
        return Ok(Reply::NotModified);
    }
    let names = &request.resource_names;
    let response = DiscoveryResponse {
        version_info: version.to_string(),
        resources: resources
            .items
            .iter()
            .filter(|(name, _)| names.is_empty() || names.contains(*name))
            .map(|(_, any)| any.clone())
            .collect(),
        type_url: type_url.to_string(),
        ..Default::default()
    };
    Ok(Reply::Resources(json::message_to_json(&response)?))
}

/// The REST xDS server's handler (see [`kgw_common::serve::serve_http`]).
pub struct RestXds<S> {
    source: S,
}

impl<S: SnapshotSource> RestXds<S> {
    pub fn new(source: S) -> Self {
        Self { source }
    }
}

impl<S: SnapshotSource> HttpHandler for RestXds<S> {
    async fn handle(&self, request: Request<Incoming>, info: &ConnInfo) -> Response<Full<Bytes>> {
        let path = request.uri().path().to_string();
        match answer(&self.source, &info.peer, request).await {
            Ok(Reply::Resources(body)) => {
                tracing::debug!(%path, version = %body["versionInfo"], "REST xDS response");
                json_response(StatusCode::OK, &body)
            }
            Ok(Reply::NotModified) => {
                let mut response = Response::new(Full::new(Bytes::new()));
                *response.status_mut() = StatusCode::NOT_MODIFIED;
                response
            }
            Err(error) => {
                tracing::info!(%path, status = error.status().as_u16(), error = %error, "REST xDS request refused");
                json_response(error.status(), &error.body())
            }
        }
    }
}

async fn answer<S: SnapshotSource>(source: &S, peer: &Peer, request: Request<Incoming>) -> Result<Reply, RestXdsError> {
    let path = request.uri().path().to_string();
    if !PATHS.iter().any(|(p, _)| *p == path) {
        return Err(RestXdsError::NoSuchPath(path));
    }
    if request.method() != Method::POST {
        return Err(RestXdsError::Method(request.method().clone()));
    }
    let body = kgw_common::body::read_capped(request.into_body(), MAX_BODY)
        .await
        .map_err(|error| match error {
            kgw_common::body::BodyError::TooLarge { .. } => RestXdsError::TooLarge,
            other => RestXdsError::Body(other.to_string()),
        })?;
    discover(peer, source, &path, &body)
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use envoy_types::pb::envoy::config::{
        cluster::v3::Cluster,
        endpoint::v3::{ClusterLoadAssignment, LocalityLbEndpoints},
        listener::v3::Listener,
    };
    use serde_json::json;

    use super::*;
    use crate::{
        translate::EnvoyResources,
        xds::{Snapshot, SnapshotCache},
    };

    fn cache() -> SnapshotCache {
        let resources = EnvoyResources {
            listeners: vec![Listener {
                name: "listener~8080".into(),
                ..Default::default()
            }],
            clusters: vec![Cluster {
                name: "echo_default".into(),
                ..Default::default()
            }],
            endpoints: ["a_default", "b_default"]
                .into_iter()
                .map(|name| ClusterLoadAssignment {
                    cluster_name: name.into(),
                    endpoints: vec![LocalityLbEndpoints::default()],
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let cache = SnapshotCache::default();
        cache.set("default~gw", Some(Arc::new(Snapshot::new(&resources))));
        cache
    }

    fn request(role: &str, version: &str, names: &[&str]) -> Vec<u8> {
        json!({
            "node": { "id": "envoy-1", "cluster": "gw", "metadata": { "role": role } },
            "versionInfo": version,
            "resourceNames": names,
        })
        .to_string()
        .into_bytes()
    }

    fn resources(reply: Reply) -> serde_json::Value {
        match reply {
            Reply::Resources(body) => body,
            Reply::NotModified => panic!("expected resources, got 304"),
        }
    }

    #[test]
    fn answers_listeners_as_proto3_json() {
        let cache = cache();
        let body = resources(
            discover(
                &Peer::Plaintext,
                &cache,
                "/v3/discovery:listeners",
                &request("default~gw", "", &[]),
            )
            .unwrap(),
        );
        assert_eq!(body["typeUrl"], LISTENER);
        assert_eq!(
            body["resources"],
            json!([{ "@type": LISTENER, "name": "listener~8080" }])
        );
        let version = body["versionInfo"].as_str().unwrap();
        assert_eq!(Some(version), cache.snapshot("default~gw").unwrap().version(LISTENER));
    }

    #[test]
    fn same_version_is_not_modified() {
        let cache = cache();
        let version = cache
            .snapshot("default~gw")
            .unwrap()
            .version(CLUSTER)
            .unwrap()
            .to_string();
        let reply = discover(
            &Peer::Plaintext,
            &cache,
            "/v3/discovery:clusters",
            &request("default~gw", &version, &[]),
        )
        .unwrap();
        assert_eq!(reply, Reply::NotModified);
        let reply = discover(
            &Peer::Plaintext,
            &cache,
            "/v3/discovery:clusters",
            &request("default~gw", "older", &[]),
        )
        .unwrap();
        assert_eq!(resources(reply)["resources"][0]["name"], "echo_default");
    }

    #[test]
    fn endpoints_by_name() {
        let cache = cache();
        let body = resources(
            discover(
                &Peer::Plaintext,
                &cache,
                "/v3/discovery:endpoints",
                &request("default~gw", "", &["b_default"]),
            )
            .unwrap(),
        );
        let names: Vec<_> = body["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["clusterName"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["b_default"]);
    }

    #[test]
    fn secrets_are_served_empty() {
        let body = resources(
            discover(
                &Peer::Plaintext,
                &cache(),
                "/v3/discovery:secrets",
                &request("default~gw", "", &[]),
            )
            .unwrap(),
        );
        assert_eq!(body["versionInfo"], "empty");
        assert_eq!(body["typeUrl"], SECRET);
        assert!(body.get("resources").is_none());
    }

    #[test]
    fn a_certificate_reads_only_its_own_role() {
        let other = Peer::Verified(kgw_proto::identity::Identity::Proxy {
            role: "other~gw".into(),
        });
        let error = discover(
            &other,
            &cache(),
            "/v3/discovery:listeners",
            &request("default~gw", "", &[]),
        )
        .unwrap_err();
        assert_eq!(error.status(), StatusCode::FORBIDDEN);
        assert!(error.to_string().contains("kgw-proxy:other~gw"), "{error}");
        let own = Peer::Verified(kgw_proto::identity::Identity::Proxy {
            role: "default~gw".into(),
        });
        assert!(
            discover(
                &own,
                &cache(),
                "/v3/discovery:listeners",
                &request("default~gw", "", &[])
            )
            .is_ok()
        );
        let anonymous = Peer::Anonymous;
        assert!(
            discover(
                &anonymous,
                &cache(),
                "/v3/discovery:listeners",
                &request("default~gw", "", &[])
            )
            .is_err()
        );
    }

    #[test]
    fn unknown_role_is_404_naming_it() {
        let error = discover(
            &Peer::Plaintext,
            &cache(),
            "/v3/discovery:listeners",
            &request("other~gw", "", &[]),
        )
        .unwrap_err();
        assert_eq!(error.status(), StatusCode::NOT_FOUND);
        assert!(
            error.body()["message"].as_str().unwrap().contains("\"other~gw\""),
            "{}",
            error.body()
        );
    }

    #[test]
    fn bad_json_is_400_naming_the_field() {
        let cache = cache();
        let body = br#"{"node": {"id": "x", "metadata": {"role": "default~gw"}}, "versionInfo": 5}"#;
        let error = discover(&Peer::Plaintext, &cache, "/v3/discovery:listeners", body).unwrap_err();
        assert_eq!(error.status(), StatusCode::BAD_REQUEST);
        let message = error.to_string();
        assert!(message.contains("versionInfo"), "{message}");

        let body = br#"{"node": {"id": "x", "metadat": {}}}"#;
        let message = discover(&Peer::Plaintext, &cache, "/v3/discovery:listeners", body)
            .unwrap_err()
            .to_string();
        assert!(message.contains("node") && message.contains("metadat"), "{message}");

        let message = discover(&Peer::Plaintext, &cache, "/v3/discovery:listeners", b"{")
            .unwrap_err()
            .to_string();
        assert!(message.starts_with("invalid DiscoveryRequest JSON"), "{message}");
    }

    #[test]
    fn missing_role_and_wrong_type_are_400() {
        let cache = cache();
        let body = br#"{"node": {"id": "x"}}"#;
        let error = discover(&Peer::Plaintext, &cache, "/v3/discovery:listeners", body).unwrap_err();
        assert!(matches!(error, RestXdsError::NoRole), "{error}");
        let body = json!({"node": {"metadata": {"role": "default~gw"}}, "typeUrl": CLUSTER}).to_string();
        let error = discover(&Peer::Plaintext, &cache, "/v3/discovery:listeners", body.as_bytes()).unwrap_err();
        assert_eq!(error.status(), StatusCode::BAD_REQUEST);
        assert!(error.to_string().contains(CLUSTER), "{error}");
    }

    #[test]
    fn unknown_path_is_404() {
        let error = discover(&Peer::Plaintext, &cache(), "/v3/discovery:runtime", b"{}").unwrap_err();
        assert_eq!(error.status(), StatusCode::NOT_FOUND);
    }

    /// Over a real socket: status codes, content type, the 304.
    #[tokio::test]
    async fn serves_http() {
        let cache = cache();
        let listener = kgw_common::serve::Listener::bind(
            "REST xDS",
            "127.0.0.1:0".parse().unwrap(),
            kgw_common::serve::ServerTls::Off,
        )
        .await
        .unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = kgw_common::shutdown::Shutdown::new();
        let server = tokio::spawn(kgw_common::serve::serve_http(
            listener,
            RestXds::new(cache.clone()),
            kgw_common::serve::HttpOptions::default(),
            shutdown.clone(),
        ));
        let url = |what: &str| format!("http://{addr}/v3/discovery:{what}");
        let post =
            |url: String, body: Vec<u8>| async move { kgw_harness::request(Method::POST, &url, None, &[], body).await };

        let ok = post(url("listeners"), request("default~gw", "", &[])).await.unwrap();
        assert_eq!(ok.status, StatusCode::OK);
        assert_eq!(ok.header("content-type"), "application/json");
        let version = ok.json().unwrap()["versionInfo"].as_str().unwrap().to_string();
        let same = post(url("listeners"), request("default~gw", &version, &[]))
            .await
            .unwrap();
        assert_eq!(same.status, StatusCode::NOT_MODIFIED);
        assert!(same.body.is_empty());
        let unknown = post(url("listeners"), request("nope~gw", "", &[])).await.unwrap();
        assert_eq!(unknown.status, StatusCode::NOT_FOUND);
        assert_eq!(unknown.json().unwrap()["code"], 404);
        let get = kgw_harness::get(&url("listeners"), None).await.unwrap();
        assert_eq!(get.status, StatusCode::METHOD_NOT_ALLOWED);
        let bad = post(url("listeners"), b"[]".to_vec()).await.unwrap();
        assert_eq!(bad.status, StatusCode::BAD_REQUEST);

        shutdown.trigger();
        tokio::time::timeout(std::time::Duration::from_secs(5), server)
            .await
            .expect("server stops on shutdown")
            .unwrap();
    }
}
