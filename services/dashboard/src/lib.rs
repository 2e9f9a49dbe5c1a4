//! The operator's dashboard: a single-page app that `vibehq up` serves at `/`.
//!
//! The app is plain HTML, CSS and JavaScript modules under `assets/`, with no front-end build:
//! the files there are what the browser runs, built into the binary by [`rust_embed`], so the
//! binary needs nothing beyond cargo's registry and loads nothing from anywhere but vibehq
//! (ARCHITECTURE.md says why this stack). Everything the app shows it reads through the public
//! API and the live feeds (`/ws/tasks`, `/ws/containers`, `/ws/ai`) with the operator's token;
//! the files themselves hold no data, so [`router`] serves them without one and the API's
//! token check stays in front of every data call.
//!
//! - `/` is the app (`index.html`); its pages are `#/tasks`, `#/tasks/<id>`, `#/queues`,
//!   `#/containers`, `#/ai`, `#/system`.
//! - `/ui/<file>` are its scripts and styles; `/ui` and `/dashboard` redirect to `/`.
//! - Every answer carries a strict Content-Security-Policy (nothing but this origin) and an
//!   ETag, so a reload costs a 304.
//!
//! Working on the app: `VIBEHQ_DASHBOARD_DIR=services/dashboard/assets vibehq up` serves the
//! files from that folder on every request instead of the built-in copies, so a change is a
//! browser reload away.

use std::borrow::Cow;
use std::path::PathBuf;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

/// The app's files, built into the binary.
#[derive(rust_embed::RustEmbed)]
#[folder = "assets/"]
struct Assets;

/// Serves the built-in files from this folder instead, when set (see the crate's docs).
pub const DEV_DIR_ENV: &str = "VIBEHQ_DASHBOARD_DIR";

/// Only this origin: the app loads no outside script, style, font or image, and talks only to
/// the API that served it (`'self'` covers same-origin WebSockets).
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; \
    base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The dashboard's routes, to be served without the API's token (they hold no data).
pub fn router() -> Router {
    let dev_dir = std::env::var_os(DEV_DIR_ENV).map(PathBuf::from);
    if let Some(dir) = &dev_dir {
        tracing::info!(dir = %dir.display(), "dashboard served from disk ({DEV_DIR_ENV})");
    }
    let index_dir = dev_dir.clone();
    Router::new()
        .route(
            "/",
            get(move |headers: HeaderMap| async move {
                serve(index_dir.as_deref(), "index.html", &headers)
            }),
        )
        .route(
            "/ui/{*file}",
            get(
                move |Path(file): Path<String>, headers: HeaderMap| async move {
                    serve(dev_dir.as_deref(), &file, &headers)
                },
            ),
        )
        .route("/ui", get(|| async { Redirect::permanent("/") }))
        .route("/ui/", get(|| async { Redirect::permanent("/") }))
        .route("/dashboard", get(|| async { Redirect::permanent("/") }))
}

/// One file, from `dev_dir` when set, else built in; 404 for anything else (including any
/// path that tries to leave the folder).
fn serve(dev_dir: Option<&std::path::Path>, file: &str, headers: &HeaderMap) -> Response {
    let Some((body, etag)) = load(dev_dir, file) else {
        return (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("the dashboard has no file {file}"),
        )
            .into_response();
    };
    let etag = format!("\"{etag}\"");
    let mut response = if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|seen| seen.as_bytes() == etag.as_bytes())
    {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, content_type(file))], body).into_response()
    };
    let h = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, value);
    }
    // Revalidate every time: the files change with the binary, and a 304 is cheap.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// The file's bytes and a validator for them.
fn load(dev_dir: Option<&std::path::Path>, file: &str) -> Option<(Cow<'static, [u8]>, String)> {
    if file.split('/').any(|part| part.is_empty() || part == "..") || file.contains('\\') {
        return None;
    }
    match dev_dir {
        Some(dir) => {
            let bytes = std::fs::read(dir.join(file)).ok()?;
            let etag = format!("dev-{:x}-{}", fnv1a(&bytes), bytes.len());
            Some((Cow::Owned(bytes), etag))
        }
        None => {
            let embedded = Assets::get(file)?;
            let etag = embedded
                .metadata
                .sha256_hash()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            Some((embedded.data, etag))
        }
    }
}

/// A cheap checksum for files served from disk while developing.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn content_type(file: &str) -> &'static str {
    match file.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get(path: &str, etag: Option<&str>) -> Response {
        let mut request = Request::get(path);
        if let Some(etag) = etag {
            request = request.header(header::IF_NONE_MATCH, etag);
        }
        router()
            .oneshot(request.body(Body::empty()).expect("request"))
            .await
            .expect("infallible")
    }

    #[tokio::test]
    async fn the_app_is_served_at_the_root_with_a_strict_policy() {
        let response = get("/", None).await;
        assert_eq!(response.status(), StatusCode::OK);
        let h = response.headers();
        assert_eq!(h[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert!(
            h[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .expect("ascii")
                .contains("default-src 'none'")
        );
    }

    #[tokio::test]
    async fn a_known_etag_costs_a_304() {
        let first = get("/ui/app.js", None).await;
        assert_eq!(first.status(), StatusCode::OK);
        let etag = first.headers()[header::ETAG]
            .to_str()
            .expect("ascii")
            .to_owned();
        let again = get("/ui/app.js", Some(&etag)).await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    }

    #[tokio::test]
    async fn nothing_outside_the_assets_is_served() {
        for path in [
            "/ui/../Cargo.toml",
            "/ui/%2e%2e/Cargo.toml",
            "/ui/nope.js",
            "/ui//x",
        ] {
            assert_eq!(
                get(path, None).await.status(),
                StatusCode::NOT_FOUND,
                "{path}"
            );
        }
    }

    #[tokio::test]
    async fn old_addresses_lead_to_the_app() {
        for path in ["/ui", "/dashboard"] {
            let response = get(path, None).await;
            assert_eq!(response.status(), StatusCode::PERMANENT_REDIRECT, "{path}");
            assert_eq!(response.headers()[header::LOCATION], "/");
        }
    }
}
