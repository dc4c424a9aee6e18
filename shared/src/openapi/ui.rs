//! The `docs` function: `GET /openapi.json` (the document) and `GET /docs`
//! (an interactive reference, Swagger UI), with nothing fetched from
//! anywhere else.
//!
//! Swagger UI's files come from `utoipa-swagger-ui` with its `vendored`
//! feature: its build script unpacks the Swagger UI release zip shipped in
//! the `utoipa-swagger-ui-vendored` crate and embeds the `dist` files with
//! `include_bytes!`, so the binary carries them and neither the build nor a
//! request touches the network. (Deployments may have no internet path; a
//! CDN-hosted page would render nothing there.)
//!
//! API Gateway routes only `/docs` and `/openapi.json` to this function, so
//! the page's own files are served from the same route:
//! `docs?asset=<name>&v=<content hash>`. Every URL in the page is relative,
//! which keeps it working under a stage prefix (`/prod/docs` loads
//! `/prod/openapi.json`). Versioned asset URLs are cached for a year; the
//! page itself is revalidated on every load.

use std::sync::{Arc, LazyLock};

use lambda_http::http::header::{HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use lambda_http::http::Method;
use lambda_http::{Body, Request, RequestExt, Response};
use sha2::{Digest, Sha256};

use crate::http::{respond, ApiError};

/// `Content-Security-Policy` of the page: scripts and styles only from this
/// origin (Swagger UI sets inline styles on elements), requests only to this
/// origin (the document and "Try it out").
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; \
     connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The page's own script (starts Swagger UI on `openapi.json`).
const INIT_JS: &str = include_str!("swagger-init.js");

/// One file the page loads.
struct Asset {
    /// The name in `?asset=`.
    name: &'static str,
    /// `Content-Type` of the response.
    content_type: &'static str,
    /// The bytes; `None` when the embedded Swagger UI lacks the file (a
    /// build of `utoipa-swagger-ui` without it), which answers 404.
    bytes: Option<Vec<u8>>,
    /// First 16 hex digits of the bytes' SHA-256, the `v` of its URL.
    version: String,
}

impl Asset {
    fn new(name: &'static str, content_type: &'static str, bytes: Option<Vec<u8>>) -> Self {
        let version =
            hex::encode(Sha256::digest(bytes.as_deref().unwrap_or_default()))[..16].to_string();
        Self {
            name,
            content_type,
            bytes,
            version,
        }
    }

    /// `docs?asset=<name>&v=<version>`, HTML-escaped for an attribute.
    fn href(&self) -> String {
        format!("docs?asset={}&amp;v={}", self.name, self.version)
    }
}

/// A file of the embedded Swagger UI `dist` folder.
fn swagger_file(name: &str) -> Option<Vec<u8>> {
    // The configuration only feeds Swagger UI's own initializer, which the
    // page does not use (it has `swagger-init.js`).
    let config = Arc::new(utoipa_swagger_ui::Config::new(["openapi.json"]));
    match utoipa_swagger_ui::serve(name, config) {
        Ok(Some(file)) => Some(file.bytes.into_owned()),
        Ok(None) => None,
        Err(err) => {
            tracing::warn!(asset = name, error = %err, "embedded Swagger UI file unreadable");
            None
        }
    }
}

static ASSETS: LazyLock<[Asset; 4]> = LazyLock::new(|| {
    [
        Asset::new(
            "swagger-ui.css",
            "text/css; charset=utf-8",
            swagger_file("swagger-ui.css"),
        ),
        Asset::new(
            "swagger-ui-bundle.js",
            "text/javascript; charset=utf-8",
            swagger_file("swagger-ui-bundle.js"),
        ),
        Asset::new(
            "swagger-init.js",
            "text/javascript; charset=utf-8",
            Some(INIT_JS.as_bytes().to_vec()),
        ),
        Asset::new(
            "favicon-32x32.png",
            "image/png",
            swagger_file("favicon-32x32.png"),
        ),
    ]
});

static DOCUMENT: LazyLock<String> = LazyLock::new(super::document_json);

fn asset(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.name == name)
}

/// The HTML of `GET /docs`.
fn page() -> String {
    let href = |name: &str| asset(name).map(Asset::href).unwrap_or_default();
    format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Analytics API reference</title>
<link rel="icon" type="image/png" href="{favicon}">
<link rel="stylesheet" href="{css}">
</head>
<body>
<noscript>This reference needs JavaScript. The OpenAPI document itself is at <a href="openapi.json">openapi.json</a>.</noscript>
<div id="swagger-ui"></div>
<script src="{bundle}"></script>
<script src="{init}"></script>
</body>
</html>
"#,
        favicon = href("favicon-32x32.png"),
        css = href("swagger-ui.css"),
        bundle = href("swagger-ui-bundle.js"),
        init = href("swagger-init.js"),
    )
}

/// The value of query parameter `name`, from the URI (the Lambda
/// integration puts API Gateway's raw query string there) or else from the
/// event's parsed parameters.
fn query_param(req: &Request, name: &str) -> Option<String> {
    let from_uri = req.uri().query().and_then(|query| {
        query.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key == name).then(|| value.to_string())
        })
    });
    from_uri.or_else(|| {
        req.query_string_parameters_ref()?
            .first(name)
            .map(String::from)
    })
}

fn response(content_type: &'static str, cache_control: &'static str, body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static(cache_control));
    headers.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// Serves the API reference:
///
/// - `GET …/openapi.json`: the OpenAPI 3.1 document (`application/json`, the
///   same bytes as the committed `openapi.json`);
/// - `GET …/docs`: the Swagger UI page (`text/html`, with a strict
///   `Content-Security-Policy`);
/// - `GET …/docs?asset=<name>`: one of the page's files (`swagger-ui.css`,
///   `swagger-ui-bundle.js`, `swagger-init.js`, `favicon-32x32.png`),
///   cached for a year when its `v` matches the embedded content.
///
/// Paths are matched by suffix, so an API Gateway stage prefix does not
/// matter. Needs no Redis and no configuration.
///
/// Errors (problem details): 404 for another path or an unknown asset, 405
/// for a method other than GET.
pub fn docs(req: &Request) -> Response<Body> {
    respond(serve(req))
}

fn serve(req: &Request) -> Result<Response<Body>, ApiError> {
    let path = req.uri().path();
    let is_docs = path == "/docs" || path.ends_with("/docs");
    let is_document = path.ends_with("/openapi.json");
    if !is_docs && !is_document {
        return Err(ApiError::NotFound(path.to_string()));
    }
    if req.method() != Method::GET {
        return Err(ApiError::MethodNotAllowed(req.method().to_string()));
    }
    if is_document {
        return Ok(response(
            "application/json",
            "public, max-age=300",
            Body::Text(DOCUMENT.clone()),
        ));
    }
    let Some(name) = query_param(req, "asset") else {
        let mut page = response("text/html; charset=utf-8", "no-cache", Body::Text(page()));
        page.headers_mut().insert(
            HeaderName::from_static("content-security-policy"),
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
        page.headers_mut().insert(
            HeaderName::from_static("referrer-policy"),
            HeaderValue::from_static("no-referrer"),
        );
        return Ok(page);
    };
    let found = asset(&name).and_then(|a| a.bytes.as_ref().map(|bytes| (a, bytes)));
    let Some((asset, bytes)) = found else {
        return Err(ApiError::NotFound(format!("asset {name:?}")));
    };
    let cache_control = if query_param(req, "v").as_deref() == Some(asset.version.as_str()) {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let body = match std::str::from_utf8(bytes) {
        Ok(text) if asset.content_type.starts_with("text/") => Body::Text(text.to_string()),
        _ => Body::Binary(bytes.clone()),
    };
    Ok(response(asset.content_type, cache_control, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(uri: &str) -> Response<Body> {
        let req = lambda_http::http::Request::builder()
            .method("GET")
            .uri(uri)
            .body(Body::Empty)
            .unwrap();
        docs(&req)
    }

    fn text(response: &Response<Body>) -> String {
        match response.body() {
            Body::Text(t) => t.clone(),
            Body::Binary(b) => String::from_utf8_lossy(b).into_owned(),
            _ => String::new(),
        }
    }

    fn header<'a>(response: &'a Response<Body>, name: &str) -> &'a str {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    #[test]
    fn every_asset_is_embedded() {
        for asset in ASSETS.iter() {
            let bytes = asset
                .bytes
                .as_ref()
                .unwrap_or_else(|| panic!("{}", asset.name));
            assert!(bytes.len() > 100, "{}", asset.name);
        }
        let bundle = asset("swagger-ui-bundle.js").unwrap();
        assert!(bundle.bytes.as_ref().unwrap().len() > 500_000);
    }

    #[test]
    fn the_document_is_served_as_committed() {
        let response = get("/openapi.json");
        assert_eq!(response.status(), 200);
        assert_eq!(header(&response, "content-type"), "application/json");
        assert_eq!(text(&response), super::super::document_json());
        // Under a stage prefix too.
        assert_eq!(get("/prod/openapi.json").status(), 200);
    }

    #[test]
    fn the_page_references_only_its_own_files() {
        let response = get("/docs");
        assert_eq!(response.status(), 200);
        assert!(header(&response, "content-type").starts_with("text/html"));
        assert_eq!(
            header(&response, "content-security-policy"),
            CONTENT_SECURITY_POLICY
        );
        let html = text(&response);
        assert!(!html.contains("http://") && !html.contains("https://") && !html.contains("//cdn"));
        for asset in ASSETS.iter() {
            assert!(html.contains(&asset.href()), "{}", asset.name);
        }
        assert!(!INIT_JS.contains("http"));
    }

    #[test]
    fn assets_are_served_and_cached_by_version() {
        for asset in ASSETS.iter() {
            let url = format!("/docs?asset={}&v={}", asset.name, asset.version);
            let response = get(&url);
            assert_eq!(response.status(), 200, "{url}");
            assert_eq!(header(&response, "content-type"), asset.content_type);
            assert!(header(&response, "cache-control").contains("immutable"));
            let body = match response.body() {
                Body::Text(t) => t.as_bytes().to_vec(),
                Body::Binary(b) => b.clone(),
                _ => Vec::new(),
            };
            assert_eq!(Some(&body), asset.bytes.as_ref());
        }
        let stale = get("/docs?asset=swagger-ui.css&v=0");
        assert_eq!(header(&stale, "cache-control"), "no-cache");
    }

    #[test]
    fn unknown_paths_assets_and_methods_are_problems() {
        for uri in [
            "/docs?asset=index.html",
            "/docs?asset=../Cargo.toml",
            "/nope",
        ] {
            let response = get(uri);
            assert_eq!(response.status(), 404, "{uri}");
            assert_eq!(
                header(&response, "content-type"),
                "application/problem+json"
            );
        }
        let req = lambda_http::http::Request::builder()
            .method("POST")
            .uri("/docs")
            .body(Body::Empty)
            .unwrap();
        assert_eq!(docs(&req).status(), 405);
    }
}
