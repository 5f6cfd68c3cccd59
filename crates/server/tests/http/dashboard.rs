//! The dashboard's files as the binary serves them (the browser tests in `e2e/` drive the page).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use crate::support;

use reqwest::Method;
use support::App;

#[tokio::test]
async fn the_root_sends_a_browser_to_the_dashboard_and_every_file_carries_the_policy() {
    let app = App::sqlite().await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let root = http.get(format!("{}/", app.base)).send().await.unwrap();
    assert_eq!(root.status(), 303);
    assert_eq!(root.headers()["location"], "/app");

    let page = app.anon(Method::GET, "/app").send().await.unwrap();
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let html = page.text().await.unwrap();
    // Every file the page names is served, from this origin, under the same policy.
    let mut named = Vec::new();
    for attr in ["src=\"", "href=\""] {
        for part in html.split(attr).skip(1) {
            let target = part.split('"').next().unwrap();
            if !target.starts_with('#') {
                named.push(target.to_owned());
            }
        }
    }
    assert!(named.contains(&"/app/app.js".to_owned()), "{named:?}");
    for target in named {
        assert!(
            target.starts_with("/app/"),
            "{target} is not one of the dashboard's own files"
        );
        let res = app.anon(Method::GET, &target).send().await.unwrap();
        assert_eq!(res.status(), 200, "{target}");
        let csp = res.headers()["content-security-policy"].to_str().unwrap().to_owned();
        assert_eq!(csp, keyward_server::dashboard::CSP, "{target}");
        assert_eq!(res.headers()["x-content-type-options"], "nosniff");
    }
    assert!(!keyward_server::dashboard::CSP.contains("unsafe"));
    let missing = app.anon(Method::GET, "/app/missing.js").send().await.unwrap();
    assert_eq!(missing.status(), 404);
}
