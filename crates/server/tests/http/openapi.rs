//! The OpenAPI document lists every route and passes a real OpenAPI 3.1 validator
//! (`openapi-spec-validator`, installed by .ci/run; required when CI is set).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use crate::support;

use reqwest::Method;

use support::{App, read};

/// The public routes beside the authenticated table.
const PUBLIC: &[(&str, &str)] = &[
    ("post", "/auth/user/emailpass"),
    ("post", "/auth/session"),
    ("delete", "/auth/session"),
    ("get", "/store/sales-channels"),
    ("get", "/store/regions"),
    ("get", "/store/products"),
    ("get", "/health"),
    ("get", "/ready"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
];

#[tokio::test]
async fn the_openapi_document_lists_every_route_and_validates() {
    let app = App::sqlite().await;
    let (s, doc) = read(app.anon(Method::GET, "/openapi.json").send().await.unwrap()).await;
    assert_eq!(s, 200);
    let paths = doc["paths"].as_object().unwrap();
    for route in keyward_server::admin_routes() {
        let (path, method) = (route.path, route.method.as_str().to_lowercase());
        assert!(
            paths.get(path).and_then(|p| p.get(&method)).is_some(),
            "{method} {path} is missing from the OpenAPI document"
        );
    }
    for (method, path) in PUBLIC {
        assert!(
            paths.get(*path).and_then(|p| p.get(*method)).is_some(),
            "{method} {path} is missing"
        );
    }
    // Every documented operation answers (is not a 404/405): the document invents nothing.
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            let concrete = path.replace("{id}", "apk_probe");
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let (s, body) = read(app.admin(m, &concrete).send().await.unwrap()).await;
            assert!(
                s != 405 && !(s == 404 && body["message"] == "Route not found"),
                "{method} {path}: {s}"
            );
        }
    }
    assert_eq!(doc["openapi"].as_str().map(|v| v.starts_with("3.1")), Some(true));
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    for name in ["bearer", "secret_key", "session", "publishable_key"] {
        assert!(schemes.contains_key(name), "{name}");
    }

    let file = tempfile_path();
    std::fs::write(&file, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    let out = std::process::Command::new("python3")
        .args(["-m", "openapi_spec_validator", file.to_str().unwrap()])
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) if String::from_utf8_lossy(&o.stderr).contains("No module named") && std::env::var_os("CI").is_none() => {
            eprintln!("\n!!! SKIPPING OpenAPI validation: pip install openapi-spec-validator to run it.\n");
        }
        Ok(o) => panic!(
            "the OpenAPI document does not validate:\n{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!("cannot run python3: {e}"),
    }
}

#[tokio::test]
async fn the_docs_page_needs_nothing_from_the_internet() {
    let app = App::sqlite().await;
    let res = app.anon(Method::GET, "/docs").send().await.unwrap();
    assert_eq!(res.status(), 200);
    let mut page = res.text().await.unwrap();
    for asset in ["/docs.js", "/docs.css"] {
        let res = app.anon(Method::GET, asset).send().await.unwrap();
        assert_eq!(res.status(), 200, "{asset}");
        page.push_str(&res.text().await.unwrap());
    }
    assert!(page.contains("fetch(\"/openapi.json\")"));
    for external in ["http://", "https://", "//cdn", "unpkg", "jsdelivr"] {
        assert!(!page.contains(external), "the docs page references {external}");
    }
}

fn tempfile_path() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("keyward-openapi-{}.json", std::process::id()))
}
