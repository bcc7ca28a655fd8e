//! The console's HTTP side: one handler that checks every request (method,
//! then access) before it routes, and puts the same security headers on
//! every answer.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::auth::{self, Access};
use super::view::{self, Cache, Counters};
use crate::daemon::Daemon;

/// How long one snapshot serves every viewer (pages poll every 2 s).
const VIEW_MAX_AGE: Duration = Duration::from_secs(1);
/// The doctor's checks probe every peer: at most this often.
const DOCTOR_MAX_AGE: Duration = Duration::from_secs(30);

const INDEX: &str = include_str!("assets/index.html");

/// The pages: one document, the script draws the page its path names.
pub const PAGES: [&str; 5] = ["/", "/topology", "/networks", "/services", "/host"];

/// Every static file: path, content type, content (compiled in). The
/// pages are [`PAGES`], each the same document.
pub const ASSETS: [(&str, &str, &str); 5] = [
    ("/", "text/html; charset=utf-8", INDEX),
    (
        "/app.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/app.js"),
    ),
    (
        "/style.css",
        "text/css; charset=utf-8",
        include_str!("assets/style.css"),
    ),
    (
        "/icon.svg",
        "image/svg+xml",
        include_str!("assets/icon.svg"),
    ),
    (
        "/favicon.ico",
        "image/svg+xml",
        include_str!("assets/icon.svg"),
    ),
];

/// No inline script or style, nothing from elsewhere, never in a frame.
const CSP: &str = "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; \
                   connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

struct Console {
    daemon: Arc<Daemon>,
    access: Access,
    view: Cache,
    doctor: Cache,
    counters: Mutex<Counters>,
}

pub fn router(daemon: Arc<Daemon>, access: Access) -> Router {
    let console = Arc::new(Console {
        daemon,
        access,
        view: Cache::new(VIEW_MAX_AGE),
        doctor: Cache::new(DOCTOR_MAX_AGE),
        counters: Mutex::new(Counters::default()),
    });
    Router::new().fallback(handle).with_state(console)
}

async fn handle(
    State(c): State<Arc<Console>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let mut r = answer(&c, &method, &uri, &headers).await;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    r
}

async fn answer(c: &Console, method: &Method, uri: &Uri, headers: &HeaderMap) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "GET, HEAD")],
            "405: the console is read-only (GET and HEAD only)\n",
        )
            .into_response();
    }
    if matches!(c.access, Access::Open) && !auth::loopback_host(headers) {
        return (
            StatusCode::MISDIRECTED_REQUEST,
            "421: this console answers only to localhost, 127.0.0.1 or [::1]\n",
        )
            .into_response();
    }
    let path = uri.path();
    if path == "/login" {
        return login(&c.access, uri.query().unwrap_or(""));
    }
    if !c.access.allows(headers) {
        return unauthorized();
    }
    if PAGES.contains(&path) {
        return text("text/html; charset=utf-8", INDEX);
    }
    if let Some((_, content_type, body)) = ASSETS.iter().find(|a| a.0 == path) {
        return text(content_type, body);
    }
    let d = &c.daemon;
    match path {
        "/api/view" => json(c.view.get(|| view::snapshot(d, &c.counters)).await),
        "/api/doctor" => json(
            c.doctor
                .get(|| async {
                    // In a task of its own: a viewer who leaves does not
                    // cancel a run half way.
                    let d = d.clone();
                    let run = tokio::spawn(async move { d.doctor(None).await });
                    match run.await {
                        Ok(Ok(report)) => serde_json::json!({ "report": report }),
                        Ok(Err(e)) => serde_json::json!({ "error": e.to_string() }),
                        Err(e) => serde_json::json!({ "error": e.to_string() }),
                    }
                })
                .await,
        ),
        other => (
            StatusCode::NOT_FOUND,
            format!("404: the console has no page {other}\n"),
        )
            .into_response(),
    }
}

/// `/login?token=TOKEN`: the cookie, then the topology page.
fn login(access: &Access, query: &str) -> Response {
    if matches!(access, Access::Open) {
        return redirect(None);
    }
    match (access.token(), url_token(query)) {
        (Some(t), Some(given)) if auth::same(&given, &t) => redirect(Some(&t)),
        _ => unauthorized(),
    }
}

fn url_token(query: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "token")
        .map(|(_, v)| v.trim().to_string())
}

fn redirect(token: Option<&str>) -> Response {
    let mut r = Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header(header::LOCATION, "/topology");
    if let Some(t) = token {
        r = r.header(header::SET_COOKIE, auth::set_cookie(t));
    }
    r.body(Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer realm=\"mesh console\"")],
        "401: this console needs its token. On the host, `meshctl console token` prints it; \
         open /login?token=TOKEN once, or send Authorization: Bearer TOKEN.\n",
    )
        .into_response()
}

fn text(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

fn json(body: axum::body::Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_login_query_names_its_token() {
        assert_eq!(url_token("token=abc"), Some("abc".into()));
        assert_eq!(url_token("x=1&token=abc&y=2"), Some("abc".into()));
        assert_eq!(url_token("tokens=abc"), None);
        assert_eq!(url_token(""), None);
    }

    #[test]
    fn a_wrong_or_missing_login_is_401_and_the_right_one_sets_the_cookie() {
        let t = "cd".repeat(32);
        let dir = auth::tests::TokenDir::new("login", &t);
        let access = Access::Token(dir.0.clone());
        assert_eq!(login(&access, "").status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            login(&access, "token=nope").status(),
            StatusCode::UNAUTHORIZED
        );
        let ok = login(&access, &format!("token={t}"));
        assert_eq!(ok.status(), StatusCode::SEE_OTHER);
        let cookie = ok.headers()[header::SET_COOKIE].to_str().unwrap();
        assert!(
            cookie.starts_with(&format!("{}={};", auth::COOKIE, auth::session(&t))),
            "{cookie}"
        );
        assert!(!login(&Access::Open, "")
            .headers()
            .contains_key(header::SET_COOKIE));
    }
}
