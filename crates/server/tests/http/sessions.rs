//! Login sessions end for real: logout refuses every copy of the token, and a deleted user (or
//! one whose password changed) is logged out everywhere.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use crate::support;

use reqwest::Method;
use support::read;

over_http! {
    async fn logout_ends_every_copy_of_the_token(app) {
        let copied = app.token.clone();
        let cookie = app.admin(Method::POST, "/auth/session").send().await.unwrap().headers()["set-cookie"]
            .to_str().unwrap().split(';').next().unwrap().to_owned();
        assert_eq!(app.get("/admin/api-keys").await.0, 200);
        // Log out with the cookie (from the server's own origin, as the dashboard does): the
        // Bearer copy of the same login dies too.
        let res = app.anon(Method::DELETE, "/auth/session").header("cookie", &cookie).header("origin", &app.base).send().await.unwrap();
        assert_eq!(res.status(), 200);
        let (s, body) = read(app.anon(Method::GET, "/admin/api-keys").bearer_auth(&copied).send().await.unwrap()).await;
        assert_eq!((s, body["message"].as_str()), (401, Some("Unauthorized")));
        let again = app.anon(Method::GET, "/admin/api-keys").header("cookie", &cookie);
        assert_eq!(again.send().await.unwrap().status(), 401);
    }

    async fn a_password_change_or_a_deleted_user_ends_its_sessions(app) {
        let user = app.kw.change_password(support::EMAIL, "a new password").await.unwrap();
        assert_eq!(user.id.as_str(), app.user_id);
        // The store that made the change drops the session from its cache before returning.
        assert_eq!(app.get("/admin/api-keys").await.0, 401, "the old login is over");
        let login = |password: &str| {
            app.anon(Method::POST, "/auth/user/emailpass")
                .json(&serde_json::json!({"email": support::EMAIL, "password": password}))
        };
        assert_eq!(login(support::PASSWORD).send().await.unwrap().status(), 401);
        let (_, body) = read(login("a new password").send().await.unwrap()).await;
        let token = body["token"].as_str().unwrap().to_owned();
        let with = |t: &str| app.anon(Method::GET, "/admin/api-keys").bearer_auth(t.to_owned());
        assert_eq!(with(&token).send().await.unwrap().status(), 200);
        app.kw.delete_user(support::EMAIL).await.unwrap();
        assert_eq!(with(&token).send().await.unwrap().status(), 401, "an actor that no longer exists");
    }
}
