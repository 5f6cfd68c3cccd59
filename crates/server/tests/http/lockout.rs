//! The owner is never locked out by strangers: 110 wrong passwords for one email from six
//! addresses exhaust the email's allowance for every new client, but the client that signed
//! in as the owner before (it holds a signed device cookie) still signs in. On both stores,
//! behind a trusted proxy that names the client in `X-Forwarded-For`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use crate::support;

use reqwest::Method;
use serde_json::json;
use support::{App, EMAIL, PASSWORD};

/// Signs in as `EMAIL` from `client` (an `X-Forwarded-For` address) with `cookie` if any:
/// the status and the `Set-Cookie` device cookie (`name=value`) it answered with.
async fn sign_in(app: &App, client: &str, password: &str, cookie: Option<&str>) -> (u16, Option<String>) {
    let mut req = app
        .anon(Method::POST, "/auth/user/emailpass")
        .header("x-forwarded-for", client)
        .json(&json!({"email": EMAIL, "password": password}));
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let res = req.send().await.unwrap();
    let device = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("keyward_device="))
        .map(|v| v.split(';').next().unwrap().to_owned());
    (res.status().as_u16(), device)
}

over_http_behind_a_proxy! {
    async fn strangers_cannot_lock_the_owner_out(proxied) {
        let support::Proxied(app) = proxied;
        let (s, device) = sign_in(&app, "192.0.2.10", PASSWORD, None).await;
        assert_eq!(s, 200);
        let device = device.expect("a successful sign-in sets the device cookie");
        let mut refused = 0;
        for i in 0..110 {
            let stranger = format!("198.51.100.{}", i % 6 + 1);
            match sign_in(&app, &stranger, "wrong guess", None).await.0 {
                401 => {}
                429 => refused += 1,
                other => panic!("attempt {i}: {other}"),
            }
        }
        assert!(refused >= 10, "the email's allowance ran out: {refused} refused");
        assert_eq!(
            sign_in(&app, "192.0.2.77", PASSWORD, None).await.0,
            429,
            "a new client is still limited"
        );
        let (s, again) = sign_in(&app, "192.0.2.10", PASSWORD, Some(&device)).await;
        assert_eq!(s, 200, "the owner's own client signs in");
        assert_eq!(again.as_deref(), Some(device.as_str()), "and keeps its device");
        // A forged or altered cookie is no device at all.
        let forged = format!("{}x", device);
        assert_eq!(sign_in(&app, "192.0.2.10", PASSWORD, Some(&forged)).await.0, 429);
        assert_eq!(
            sign_in(&app, "192.0.2.10", PASSWORD, Some("keyward_device=abc.def"))
                .await
                .0,
            429
        );
        // The device's own allowance is limited too: guessing from it runs out.
        let mut device_refused = false;
        for _ in 0..25 {
            if sign_in(&app, "192.0.2.10", "wrong guess", Some(&device)).await.0 == 429 {
                device_refused = true;
                break;
            }
        }
        assert!(device_refused, "a device cookie is no licence to guess");
    }
}
