//! The AWS Lambda detector: the functions of one account in one region, from
//! `ListFunctions` (`GET /2015-03-31/functions/`, paginated by `Marker` / `NextMarker`),
//! signed with SigV4. Each function becomes a function of the Lambda upstream, at
//! `$LATEST` (what ListFunctions lists).
use std::time::{Duration, SystemTime};

use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::{Request, StatusCode, Uri, body::Bytes};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use kgw_proto::v1::{Function, LambdaFunction, function::Spec};
use serde::Deserialize;
use tracing::Instrument as _;

use super::{Detector, FdsError, ProbeConfig, ProbeResult, sigv4};
pub use sigv4::Credentials;

pub(crate) const KIND: &str = "lambda";
/// ListFunctions' `MaxItems` (its maximum is 50).
pub const PAGE_SIZE: u32 = 50;
/// At most this many pages (10,000 functions at 50 a page): ends a server that always
/// answers with a NextMarker.
const MAX_PAGES: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum LambdaError {
    #[error("invalid region {0:?}")]
    Region(String),
    #[error("invalid endpoint {0:?}")]
    Endpoint(String),
    #[error("cannot load TLS roots")]
    Roots(#[source] std::io::Error),
    #[error("invalid request")]
    Request(#[source] hyper::http::Error),
    #[error("request failed")]
    Send(#[source] hyper_util::client::legacy::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("response larger than {0} bytes")]
    TooLarge(usize),
    #[error("cannot read the response")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("HTTP {status}: {body}")]
    Status { status: StatusCode, body: String },
    #[error("not a ListFunctions response")]
    Json(#[source] serde_json::Error),
    #[error("more than {MAX_PAGES} pages")]
    TooManyPages,
}

/// Where and as whom to list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LambdaTarget {
    /// `us-east-1`...
    pub region: String,
    pub credentials: Credentials,
    /// `None`: `https://lambda.<region>.amazonaws.com`; else another (an emulator, a VPC
    /// endpoint), `http://` or `https://`.
    pub endpoint: Option<String>,
    /// `MaxItems` per page; `None`: [`PAGE_SIZE`].
    pub page_size: Option<u32>,
}

impl LambdaTarget {
    /// The schedule's fingerprint: a new region, endpoint or key re-probes at once.
    pub fn fingerprint(&self) -> super::schedule::Fingerprint {
        use sha2::Digest as _;
        let secret = sha2::Sha256::digest(self.credentials.secret_access_key.as_bytes());
        super::schedule::Fingerprint {
            extra: vec![
                self.region.clone(),
                self.endpoint.clone().unwrap_or_default(),
                self.credentials.access_key_id.clone(),
                hex::encode(&secret[..8]),
            ],
            ..Default::default()
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListFunctions {
    #[serde(default)]
    functions: Vec<Listed>,
    next_marker: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Listed {
    function_name: String,
    #[serde(default)]
    function_arn: String,
    version: Option<String>,
}

/// Lists every function of the target. Found (maybe none) or an error; never partial.
pub async fn probe(target: &LambdaTarget, config: &ProbeConfig) -> ProbeResult {
    let span = tracing::info_span!("fds.probe", detector = KIND, region = target.region);
    let list = async {
        let listed = tokio::time::timeout(config.probe_timeout, list(target, config))
            .await
            .unwrap_or(Err(LambdaError::Timeout(config.probe_timeout)));
        match listed {
            Ok(functions) => {
                tracing::info!(functions = functions.len(), "functions found");
                ProbeResult {
                    functions,
                    detector: Some(Detector::Lambda),
                    source: endpoint(target).unwrap_or_default(),
                    ..Default::default()
                }
            }
            Err(source) => {
                let error = FdsError::Lambda {
                    region: target.region.clone(),
                    source,
                };
                tracing::debug!(error = %super::chain(&error), "no functions");
                ProbeResult {
                    error: Some(error),
                    ..Default::default()
                }
            }
        }
    };
    list.instrument(span).await
}

fn endpoint(target: &LambdaTarget) -> Result<String, LambdaError> {
    let region = &target.region;
    // It becomes a host name: nothing but what AWS region names use.
    if region.is_empty()
        || !region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(LambdaError::Region(region.clone()));
    }
    Ok(match &target.endpoint {
        Some(endpoint) => endpoint.trim_end_matches('/').to_string(),
        None => format!("https://lambda.{region}.amazonaws.com"),
    })
}

async fn list(target: &LambdaTarget, config: &ProbeConfig) -> Result<Vec<Function>, LambdaError> {
    let base = endpoint(target)?;
    let base_uri: Uri = base.parse().map_err(|_| LambdaError::Endpoint(base.clone()))?;
    let host = base_uri
        .authority()
        .map(|a| a.as_str().to_string())
        .ok_or_else(|| LambdaError::Endpoint(base.clone()))?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(LambdaError::Roots)?
        .https_or_http()
        .enable_http1()
        .build();
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let page_size = target.page_size.unwrap_or(PAGE_SIZE).clamp(1, PAGE_SIZE);
    let mut out = Vec::new();
    let mut marker: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let mut query = vec![("MaxItems".to_string(), page_size.to_string())];
        if let Some(marker) = &marker {
            query.push(("Marker".to_string(), marker.clone()));
        }
        let page: ListFunctions = get_page(&client, &base, &host, &query, target, config).await?;
        out.extend(page.functions.into_iter().map(|f| Function {
            name: f.function_name.clone(),
            kind: KIND.to_string(),
            spec: Some(Spec::Lambda(LambdaFunction {
                function_name: f.function_name,
                qualifier: f.version.unwrap_or_else(|| "$LATEST".to_string()),
                arn: f.function_arn,
            })),
        }));
        match page.next_marker.filter(|m| !m.is_empty()) {
            Some(next) => marker = Some(next),
            None => {
                out.sort_by(|a, b| a.name.cmp(&b.name));
                out.dedup_by(|a, b| a.name == b.name);
                return Ok(out);
            }
        }
    }
    Err(LambdaError::TooManyPages)
}

async fn get_page(
    client: &Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>,
    base: &str,
    host: &str,
    query: &[(String, String)],
    target: &LambdaTarget,
    config: &ProbeConfig,
) -> Result<ListFunctions, LambdaError> {
    const PATH: &str = "/2015-03-31/functions/";
    let amz_date = sigv4::amz_date(SystemTime::now());
    let mut headers = vec![
        ("host".to_string(), host.to_string()),
        ("x-amz-date".to_string(), amz_date.clone()),
    ];
    if let Some(token) = &target.credentials.session_token {
        headers.push(("x-amz-security-token".to_string(), token.clone()));
    }
    let unsigned = sigv4::Request {
        method: "GET",
        path: PATH,
        query,
        headers: &headers,
        payload: b"",
    };
    let authorization = sigv4::authorization(&unsigned, &target.credentials, &target.region, "lambda", &amz_date);
    let base_path = base
        .split_once("://")
        .map_or("", |(_, rest)| rest.find('/').map_or("", |i| &rest[i..]));
    if !base_path.is_empty() {
        // The signature covers the path; an endpoint with a path prefix would not match it.
        return Err(LambdaError::Endpoint(base.to_string()));
    }
    let uri = format!("{base}{PATH}?{}", sigv4::canonical_query(query));
    let mut request = Request::get(uri).header("authorization", authorization);
    for (name, value) in &headers {
        // hyper sets Host from the URI (the same authority).
        if name != "host" {
            request = request.header(name.as_str(), value.as_str());
        }
    }
    let request = request.body(Empty::new()).map_err(LambdaError::Request)?;
    let limit = config.max_body_bytes;
    let exchange = async {
        let response = client.request(request).await.map_err(LambdaError::Send)?;
        let status = response.status();
        let body = Limited::new(response.into_body(), limit)
            .collect()
            .await
            .map_err(|error| match error.downcast::<http_body_util::LengthLimitError>() {
                Ok(_) => LambdaError::TooLarge(limit),
                Err(other) => LambdaError::Body(other),
            })?
            .to_bytes();
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            let body = text.chars().take(300).collect();
            return Err(LambdaError::Status { status, body });
        }
        serde_json::from_slice(&body).map_err(LambdaError::Json)
    };
    tokio::time::timeout(config.request_timeout, exchange)
        .await
        .map_err(|_| LambdaError::Timeout(config.request_timeout))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(region: &str, endpoint: Option<&str>) -> LambdaTarget {
        LambdaTarget {
            region: region.into(),
            credentials: Credentials {
                access_key_id: "a".into(),
                secret_access_key: "s".into(),
                session_token: None,
            },
            endpoint: endpoint.map(Into::into),
            page_size: None,
        }
    }

    #[test]
    fn endpoints() {
        assert_eq!(
            endpoint(&target("eu-west-1", None)).ok().as_deref(),
            Some("https://lambda.eu-west-1.amazonaws.com")
        );
        assert_eq!(
            endpoint(&target("us-east-1", Some("http://127.0.0.1:5000/")))
                .ok()
                .as_deref(),
            Some("http://127.0.0.1:5000")
        );
        assert!(matches!(
            endpoint(&target("evil.com/x", None)),
            Err(LambdaError::Region(_))
        ));
        assert!(matches!(endpoint(&target("", None)), Err(LambdaError::Region(_))));
    }

    #[test]
    fn fingerprint_changes_with_the_key_and_hides_it() {
        let a = target("us-east-1", None);
        let mut b = a.clone();
        b.credentials.secret_access_key = "rotated".into();
        assert!(a.fingerprint().probeable());
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert!(!format!("{:?}", b.fingerprint()).contains("rotated"));
    }

    #[test]
    fn parses_a_page() {
        let page: ListFunctions = serde_json::from_str(
            r#"{"Functions": [{"FunctionName": "f", "FunctionArn": "arn:aws:lambda:us-east-1:1:function:f",
                "Version": "$LATEST", "Runtime": "python3.12"}], "NextMarker": "abc"}"#,
        )
        .expect("parses");
        assert_eq!(page.functions[0].function_name, "f");
        assert_eq!(page.next_marker.as_deref(), Some("abc"));
        let last: ListFunctions = serde_json::from_str(r#"{"Functions": []}"#).expect("parses");
        assert!(last.next_marker.is_none());
    }
}
