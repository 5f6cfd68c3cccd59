//! Every authenticated route in one table: its path, method, handler and the permission a
//! restricted key needs for it. The router is built from it ([`crate::app`]), restricted keys are
//! checked against it ([`route_permission`], from [`crate::auth::guard_admin_paths`]), and the
//! tests walk it, so no route can be added without naming its permission.

use axum::http::Method;
use axum::routing::{MethodRouter, delete, get, post};
use keyward::Permission;

use crate::{AppState, activity, admin, store};

/// One authenticated route and method: its handler and the permission a restricted key needs
/// for it.
pub struct AdminRoute {
    pub path: &'static str,
    pub method: Method,
    pub permission: Permission,
    pub handler: MethodRouter<AppState>,
}

fn route(path: &'static str, method: Method, permission: Permission, handler: MethodRouter<AppState>) -> AdminRoute {
    AdminRoute {
        path,
        method,
        permission,
        handler,
    }
}

/// Every authenticated route (`/admin/*` and the verification API), each method with its
/// handler and permission. The router is built from this table, restricted keys are checked
/// against it ([`route_permission`]), and the tests walk it. Protection itself does not depend
/// on the table: [`auth::guard_admin_paths`] covers every path under `/admin` and `/v1`.
pub fn admin_routes() -> Vec<AdminRoute> {
    use Permission::*;
    const KEY: &str = "/admin/api-keys/{id}";
    const CHANNEL: &str = "/admin/sales-channels/{id}";
    vec![
        route("/admin/api-keys", Method::GET, ApiKeysRead, get(admin::list_keys)),
        route("/admin/api-keys", Method::POST, ApiKeysWrite, post(admin::create_key)),
        route(KEY, Method::GET, ApiKeysRead, get(admin::get_key)),
        route(KEY, Method::POST, ApiKeysWrite, post(admin::update_key)),
        route(KEY, Method::DELETE, ApiKeysWrite, delete(admin::delete_key)),
        route(
            "/admin/api-keys/{id}/revoke",
            Method::POST,
            ApiKeysWrite,
            post(admin::revoke_key),
        ),
        route(
            "/admin/api-keys/{id}/roll",
            Method::POST,
            ApiKeysWrite,
            post(admin::roll_key),
        ),
        route(
            "/admin/api-keys/{id}/sales-channels",
            Method::POST,
            ApiKeysWrite,
            post(admin::link_channels),
        ),
        route(
            "/admin/sales-channels",
            Method::GET,
            SalesChannelsRead,
            get(admin::list_channels),
        ),
        route(
            "/admin/sales-channels",
            Method::POST,
            SalesChannelsWrite,
            post(admin::create_channel),
        ),
        route(CHANNEL, Method::GET, SalesChannelsRead, get(admin::get_channel)),
        route(CHANNEL, Method::POST, SalesChannelsWrite, post(admin::update_channel)),
        route(
            CHANNEL,
            Method::DELETE,
            SalesChannelsWrite,
            delete(admin::delete_channel),
        ),
        route("/admin/users/me", Method::GET, UsersRead, get(admin::me)),
        route(
            "/admin/workflow-runs",
            Method::GET,
            WorkflowsRead,
            get(activity::workflow_runs),
        ),
        route("/admin/events", Method::GET, WorkflowsRead, get(activity::events)),
        route("/v1/keys/verify", Method::POST, KeysVerify, post(store::verify_key)),
    ]
}

/// The permission a request needs, from [`admin_routes`]; `None` for a path and method it does
/// not name. Read only for restricted keys.
pub fn route_permission(method: &Method, path: &str) -> Option<Permission> {
    static TABLE: std::sync::OnceLock<Vec<(Method, &'static str, Permission)>> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        admin_routes()
            .into_iter()
            .map(|r| (r.method, r.path, r.permission))
            .collect()
    });
    // HEAD is answered by the GET handler, so it needs what GET needs.
    let method = if method == Method::HEAD { &Method::GET } else { method };
    table
        .iter()
        .find(|(m, pattern, _)| m == method && path_matches(pattern, path))
        .map(|(_, _, p)| *p)
}

/// Whether `path` fits a route pattern whose `{name}` segments match any one segment.
fn path_matches(pattern: &str, path: &str) -> bool {
    let path = path.strip_suffix('/').filter(|p| !p.is_empty()).unwrap_or(path);
    let (mut want, mut got) = (pattern.split('/'), path.split('/'));
    loop {
        match (want.next(), got.next()) {
            (None, None) => return true,
            (Some(w), Some(g)) if w.starts_with('{') => {
                if g.is_empty() {
                    return false;
                }
            }
            (Some(w), Some(g)) if w == g => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_finds_its_routes_permission_and_nothing_else_does() {
        let get = |path| route_permission(&Method::GET, path);
        assert_eq!(get("/admin/api-keys"), Some(Permission::ApiKeysRead));
        assert_eq!(get("/admin/api-keys/"), Some(Permission::ApiKeysRead));
        assert_eq!(get("/admin/api-keys/apk_1"), Some(Permission::ApiKeysRead));
        assert_eq!(
            route_permission(&Method::HEAD, "/admin/api-keys/apk_1"),
            Some(Permission::ApiKeysRead)
        );
        assert_eq!(
            route_permission(&Method::POST, "/admin/api-keys/apk_1/roll"),
            Some(Permission::ApiKeysWrite)
        );
        assert_eq!(
            route_permission(&Method::POST, "/v1/keys/verify"),
            Some(Permission::KeysVerify)
        );
        for (method, path) in [
            (Method::GET, "/admin/api-keys//revoke"),
            (Method::POST, "/admin/api-keys/apk_1/roll/extra"),
            (Method::PUT, "/admin/api-keys/apk_1"),
            (Method::GET, "/v1/keys/verify"),
            (Method::GET, "/admin"),
        ] {
            assert_eq!(route_permission(&method, path), None, "{method} {path}");
        }
    }
}
