//! The OpenAPI detector: finds a Swagger 2 or OpenAPI 3 document (JSON or YAML) on an
//! upstream and turns each operation into a function.
//!
//! Paths asked, in order: the one a Service annotation names ([`OPENAPI_PATH_ANNOTATION`]),
//! then [`WELL_KNOWN_PATHS`]. The first answer that parses as a document wins. Unlike
//! Gloo, an address that refuses or does not answer stops the walk at once instead of
//! costing one timeout per path.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
};

use kgw_proto::v1::{Function, FunctionParameter, OpenApiFunction, function::Spec};
use serde_json::Value;

use super::{FdsError, ProbeConfig, http};

/// Service annotation naming the path of the upstream's OpenAPI document, e.g.
/// `discovery.solo.io/openapi-path: /api/openapi.yaml`. Asked before [`WELL_KNOWN_PATHS`].
pub const OPENAPI_PATH_ANNOTATION: &str = "discovery.solo.io/openapi-path";

/// Where frameworks serve their documents by default (Gloo's list, plus springdoc,
/// FastAPI, ASP.NET's Swashbuckle).
pub const WELL_KNOWN_PATHS: &[&str] = &[
    "/openapi.json",
    "/swagger.json",
    "/swagger/docs/v1",
    "/swagger/docs/v2",
    "/v1/swagger",
    "/v2/swagger",
    "/swagger/v1/swagger.json",
    "/v3/api-docs",
    "/v2/api-docs",
    "/openapi.yaml",
    "/swagger.yaml",
];

pub(crate) const KIND: &str = "openapi";

#[derive(Debug, thiserror::Error)]
pub enum OpenApiError {
    #[error("neither JSON nor YAML")]
    Syntax(#[source] serde_yaml::Error),
    #[error("not a Swagger 2 or OpenAPI 3 document (no `swagger: 2.x` / `openapi: 3.x` with `paths`)")]
    NotADocument,
}

/// What one address served: the functions of the first document found, with its path.
pub(crate) struct Found {
    pub(crate) path: String,
    pub(crate) functions: Vec<Function>,
}

/// Asks `addr` for each path in turn. `Ok(None)`: it answered, but with no document.
pub(crate) async fn detect(
    addr: SocketAddr,
    annotated: Option<&str>,
    tls: Option<http::Tls<'_>>,
    config: &ProbeConfig,
) -> Result<Option<Found>, FdsError> {
    let usual = WELL_KNOWN_PATHS.iter().copied().filter(|p| Some(*p) != annotated);
    let paths = annotated.into_iter().chain(usual);
    for path in paths {
        let response = match http::get(addr, path, tls, config.request_timeout, config.max_body_bytes).await {
            Ok(response) => response,
            Err(source) if source.unreachable() => {
                return Err(FdsError::Http {
                    addr,
                    path: path.to_string(),
                    source,
                });
            }
            Err(error) => {
                tracing::debug!(%addr, path, error = %super::chain(&error), "no document");
                continue;
            }
        };
        if !response.status.is_success() {
            tracing::trace!(%addr, path, status = %response.status, "no document");
            continue;
        }
        match parse(&response.body) {
            Ok(functions) => {
                return Ok(Some(Found {
                    path: path.to_string(),
                    functions,
                }));
            }
            Err(error) => {
                tracing::debug!(%addr, path, content_type = response.content_type, error = %super::chain(&error), "not a document");
            }
        }
    }
    Ok(None)
}

/// The functions of one document, sorted by name; names made unique by a `_2`, `_3`...
/// suffix in (method, path) order.
pub fn parse(body: &[u8]) -> Result<Vec<Function>, OpenApiError> {
    // JSON first: it is YAML too, but libyaml rejects some of it (tab indentation, as Go's
    // MarshalIndent writes).
    let doc: Value = match serde_json::from_slice(body) {
        Ok(doc) => doc,
        Err(_) => serde_yaml::from_slice(body).map_err(OpenApiError::Syntax)?,
    };
    let version = |key: &str, prefix: &str| {
        doc.get(key)
            .and_then(Value::as_str)
            .is_some_and(|v| v.starts_with(prefix))
    };
    let swagger2 = version("swagger", "2.");
    if !swagger2 && !version("openapi", "3.") {
        return Err(OpenApiError::NotADocument);
    }
    let Some(paths) = doc.get("paths").and_then(Value::as_object) else {
        return Err(OpenApiError::NotADocument);
    };
    let base = if swagger2 {
        doc.get("basePath").and_then(Value::as_str).unwrap_or("").to_string()
    } else {
        server_path(&doc)
    };
    let mut operations = Vec::new();
    for (path, item) in paths {
        let Some(item) = item.as_object() else { continue };
        let shared = item.get("parameters");
        for (method, operation) in item {
            if !METHODS.contains(&method.as_str()) {
                continue;
            }
            let method = method.to_ascii_uppercase();
            let full_path = join(&base, path);
            let parameters = parameters(&doc, shared, operation, swagger2);
            let name = operation
                .get("operationId")
                .and_then(Value::as_str)
                .filter(|id| !id.trim().is_empty())
                .map(|id| id.trim().to_string())
                .unwrap_or_else(|| normalized_name(&method, path));
            operations.push(Function {
                name,
                kind: KIND.to_string(),
                spec: Some(Spec::Openapi(OpenApiFunction {
                    method,
                    path: full_path,
                    parameters,
                })),
            });
        }
    }
    Ok(unique_sorted(operations))
}

const METHODS: &[&str] = &["get", "put", "post", "delete", "options", "head", "patch", "trace"];

/// `GET /pets/{petId}` → `get_pets_petId`: only `[A-Za-z0-9_]`, runs of others become one `_`.
pub(crate) fn normalized_name(method: &str, path: &str) -> String {
    let mut out = method.to_ascii_lowercase();
    for c in path.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    out.trim_end_matches('_').to_string()
}

/// The path of OpenAPI 3's first server URL (`https://host/v1` or `/v1` → `/v1`); ""
/// when it is absent or templated (its variables are the deployer's business).
fn server_path(doc: &Value) -> String {
    let Some(url) = doc.pointer("/servers/0/url").and_then(Value::as_str) else {
        return String::new();
    };
    if url.contains('{') {
        return String::new();
    }
    let path = match url.find("://") {
        Some(scheme_end) => {
            let rest = &url[scheme_end + 3..];
            rest.find('/').map_or("", |i| &rest[i..])
        }
        None => url,
    };
    path.to_string()
}

fn join(base: &str, path: &str) -> String {
    let base = base.trim_end_matches('/');
    if base.is_empty() || base == "/" {
        return path.to_string();
    }
    let base = if base.starts_with('/') {
        base.to_string()
    } else {
        format!("/{base}")
    };
    format!("{base}{path}")
}

/// The operation's parameters over the path item's (same name and location: the
/// operation's wins), sorted by (location, name); OpenAPI 3's requestBody as `body`.
fn parameters(doc: &Value, shared: Option<&Value>, operation: &Value, swagger2: bool) -> Vec<FunctionParameter> {
    let mut out: BTreeMap<(String, String), FunctionParameter> = BTreeMap::new();
    let listed = [shared, operation.get("parameters")];
    for list in listed.into_iter().flatten().filter_map(Value::as_array) {
        for raw in list {
            let parameter = resolve(doc, raw);
            let (Some(name), Some(location)) = (
                parameter.get("name").and_then(Value::as_str),
                parameter.get("in").and_then(Value::as_str),
            ) else {
                continue;
            };
            let schema = if swagger2 && location != "body" {
                Some(parameter)
            } else {
                parameter.get("schema").map(|s| resolve(doc, s))
            };
            let parameter = FunctionParameter {
                name: name.to_string(),
                location: location.to_string(),
                // Path parameters are always required, whatever the document says.
                required: location == "path" || parameter.get("required").and_then(Value::as_bool) == Some(true),
                r#type: schema.map(schema_type).unwrap_or_default(),
            };
            out.insert((parameter.location.clone(), parameter.name.clone()), parameter);
        }
    }
    if let Some(body) = operation.get("requestBody").map(|b| resolve(doc, b)) {
        let schema = body
            .get("content")
            .and_then(Value::as_object)
            .and_then(|content| content.values().next())
            .and_then(|media| media.get("schema"))
            .map(|s| resolve(doc, s));
        let parameter = FunctionParameter {
            name: "body".into(),
            location: "body".into(),
            required: body.get("required").and_then(Value::as_bool) == Some(true),
            r#type: schema.map(schema_type).unwrap_or_default(),
        };
        out.insert(("body".into(), "body".into()), parameter);
    }
    out.into_values().collect()
}

/// A schema's `type`; `object` for one with properties or composition but no type.
fn schema_type(schema: &Value) -> String {
    if let Some(t) = schema.get("type").and_then(Value::as_str) {
        return t.to_string();
    }
    let composed = ["properties", "allOf", "oneOf", "anyOf"];
    if composed.iter().any(|k| schema.get(k).is_some()) {
        return "object".into();
    }
    String::new()
}

/// Follows local `$ref`s (`#/components/...`, `#/parameters/...`), at most 8 deep so a
/// cycle ends; an unresolvable one leaves the value as it is.
fn resolve<'a>(doc: &'a Value, mut value: &'a Value) -> &'a Value {
    for _ in 0..8 {
        let Some(pointer) = value
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix('#'))
        else {
            break;
        };
        match doc.pointer(pointer) {
            Some(target) => value = target,
            None => break,
        }
    }
    value
}

/// Sorted by name; a name seen again (duplicate operationIds, or an operationId equal to
/// another's normalized name) gets the first free `_2`, `_3`... in (path, method) order.
fn unique_sorted(mut functions: Vec<Function>) -> Vec<Function> {
    let key = |f: &Function| match &f.spec {
        Some(Spec::Openapi(o)) => (f.name.clone(), o.path.clone(), o.method.clone()),
        _ => (f.name.clone(), String::new(), String::new()),
    };
    functions.sort_by_key(key);
    let mut taken: BTreeSet<String> = functions.iter().map(|f| f.name.clone()).collect();
    let mut previous: Option<String> = None;
    for function in &mut functions {
        if previous.as_deref() == Some(function.name.as_str()) {
            let base = std::mem::take(&mut function.name);
            let mut n = 2;
            while taken.contains(&format!("{base}_{n}")) {
                n += 1;
            }
            function.name = format!("{base}_{n}");
            taken.insert(function.name.clone());
            previous = Some(base);
        } else {
            previous = Some(function.name.clone());
        }
    }
    functions.sort_by(|a, b| a.name.cmp(&b.name));
    functions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn openapi(f: &Function) -> &OpenApiFunction {
        match &f.spec {
            Some(Spec::Openapi(o)) => o,
            other => panic!("not openapi: {other:?}"),
        }
    }

    const SWAGGER2: &str = r##"{
      "swagger": "2.0",
      "basePath": "/api",
      "parameters": {"limit": {"name": "limit", "in": "query", "type": "integer"}},
      "paths": {
        "/pets": {
          "get": {"operationId": "listPets", "parameters": [{"$ref": "#/parameters/limit"}]},
          "post": {"parameters": [{"name": "pet", "in": "body", "required": true, "schema": {"$ref": "#/definitions/Pet"}}]}
        },
        "/pets/{petId}": {
          "parameters": [{"name": "petId", "in": "path", "type": "string"}],
          "get": {"operationId": "getPet", "parameters": [{"name": "verbose", "in": "query", "type": "boolean"}]},
          "x-extension": {"ignored": true}
        }
      },
      "definitions": {"Pet": {"type": "object", "properties": {"name": {"type": "string"}}}}
    }"##;

    #[test]
    fn swagger2_operations_become_functions() {
        let functions = parse(SWAGGER2.as_bytes()).expect("parses");
        let names: Vec<_> = functions.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["getPet", "listPets", "post_pets"]);
        let get_pet = openapi(&functions[0]);
        assert_eq!(
            (get_pet.method.as_str(), get_pet.path.as_str()),
            ("GET", "/api/pets/{petId}")
        );
        let params: Vec<_> = get_pet
            .parameters
            .iter()
            .map(|p| (p.name.as_str(), p.location.as_str(), p.required, p.r#type.as_str()))
            .collect();
        assert_eq!(
            params,
            [
                ("petId", "path", true, "string"),
                ("verbose", "query", false, "boolean")
            ]
        );
        assert_eq!(openapi(&functions[1]).parameters[0].r#type, "integer");
        let body = &openapi(&functions[2]).parameters[0];
        assert_eq!(
            (body.location.as_str(), body.required, body.r#type.as_str()),
            ("body", true, "object")
        );
        assert!(functions.iter().all(|f| f.kind == "openapi"));
    }

    #[test]
    fn openapi3_yaml_with_servers_and_request_body() {
        let doc = r#"
openapi: 3.0.3
servers:
  - url: https://example.com/v1
paths:
  /items/{id}:
    put:
      operationId: putItem
      parameters:
        - {name: id, in: path, schema: {type: integer}}
        - $ref: '#/components/parameters/Trace'
      requestBody:
        required: true
        content:
          application/json:
            schema: {$ref: '#/components/schemas/Item'}
      responses:
        200: {description: ok}
components:
  parameters:
    Trace: {name: x-trace, in: header, required: false, schema: {type: string}}
  schemas:
    Item: {type: object}
"#;
        let functions = parse(doc.as_bytes()).expect("parses");
        assert_eq!(functions.len(), 1);
        let put = openapi(&functions[0]);
        assert_eq!((put.method.as_str(), put.path.as_str()), ("PUT", "/v1/items/{id}"));
        let params: Vec<_> = put
            .parameters
            .iter()
            .map(|p| (p.location.as_str(), p.name.as_str(), p.required, p.r#type.as_str()))
            .collect();
        assert_eq!(
            params,
            [
                ("body", "body", true, "object"),
                ("header", "x-trace", false, "string"),
                ("path", "id", true, "integer")
            ]
        );
    }

    #[test]
    fn not_documents() {
        assert!(matches!(parse(b"<html>hello</html>"), Err(OpenApiError::NotADocument)));
        assert!(matches!(
            parse(b"{\"swagger\": \"1.2\", \"paths\": {}}"),
            Err(OpenApiError::NotADocument)
        ));
        assert!(matches!(
            parse(b"{\"openapi\": \"3.1.0\"}"),
            Err(OpenApiError::NotADocument)
        ));
        assert!(matches!(
            parse(b"{\"openapi\": [unclosed"),
            Err(OpenApiError::Syntax(_))
        ));
        assert!(
            parse(b"{\"openapi\": \"3.1.0\", \"paths\": {}}")
                .expect("empty")
                .is_empty()
        );
    }

    #[test]
    fn names_are_normalized_and_unique() {
        assert_eq!(normalized_name("GET", "/pets/{petId}/toys"), "get_pets_petId_toys");
        assert_eq!(normalized_name("DELETE", "/"), "delete");
        let doc = r#"{"openapi": "3.0.0", "paths": {
            "/a": {"get": {"operationId": "op"}, "post": {"operationId": "op"}},
            "/b": {"get": {"operationId": "op_2"}, "put": {"operationId": "op"}}}}"#;
        let names: Vec<_> = parse(doc.as_bytes())
            .expect("parses")
            .into_iter()
            .map(|f| f.name)
            .collect();
        assert_eq!(names, ["op", "op_2", "op_3", "op_4"]);
    }

    #[test]
    fn tab_indented_json_and_yaml_bombs() {
        let tabbed = "{\n\t\"swagger\": \"2.0\",\n\t\"paths\": {\"/x\": {\"get\": {}}}\n}";
        assert_eq!(parse(tabbed.as_bytes()).expect("parses").len(), 1);
        // A billion laughs: serde_yaml refuses to expand it instead of eating the memory.
        let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for level in 1..10 {
            let prev = level - 1;
            let refs = vec![format!("*l{prev}"); 10].join(", ");
            bomb.push_str(&format!("l{level}: &l{level} [{refs}]\n"));
        }
        let bomb = bomb.replace("&a", "&l0");
        assert!(matches!(parse(bomb.as_bytes()), Err(OpenApiError::Syntax(_))));
    }

    #[test]
    fn ref_cycles_end() {
        let doc = r##"{"swagger": "2.0", "parameters": {"a": {"$ref": "#/parameters/a"}},
            "paths": {"/x": {"get": {"parameters": [{"$ref": "#/parameters/a"}]}}}}"##;
        let functions = parse(doc.as_bytes()).expect("parses");
        assert!(openapi(&functions[0]).parameters.is_empty());
    }

    #[test]
    fn server_paths() {
        let doc = |url: &str| serde_json::json!({"servers": [{"url": url}]});
        assert_eq!(server_path(&doc("https://h/v1/")), "/v1/");
        assert_eq!(server_path(&doc("http://h")), "");
        assert_eq!(server_path(&doc("/v2")), "/v2");
        assert_eq!(server_path(&doc("https://{region}.h/v1")), "");
        assert_eq!(join("/v1/", "/x"), "/v1/x");
        assert_eq!(join("v1", "/x"), "/v1/x");
        assert_eq!(join("/", "/x"), "/x");
    }
}
