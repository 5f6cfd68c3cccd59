//! Every authenticated route in one table: its path, method, handler and the permission a
//! restricted key needs for it. The router is built from it ([`crate::app`]), restricted keys are
//! checked against it ([`route_permission`], from [`crate::auth::guard_admin_paths`]), and the
//! tests walk it, so no route can be added without naming its permission.

use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{MethodFilter, MethodRouter, on};
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

/// `handler` answering `method` on `path`, for restricted keys holding `permission`.
fn route<H, T>(method: Method, path: &'static str, permission: Permission, handler: H) -> AdminRoute
where
    H: Handler<T, AppState>,
    T: 'static,
{
    // The table names GET, POST and DELETE, each a method filter of its own; a method that is
    // not one would route nothing (405), never another method.
    let handler = match MethodFilter::try_from(method.clone()) {
        Ok(filter) => on(filter, handler),
        Err(_) => MethodRouter::new(),
    };
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
    const GET: Method = Method::GET;
    const POST: Method = Method::POST;
    const DELETE: Method = Method::DELETE;
    const KEY: &str = "/admin/api-keys/{id}";
    const KEY_CHANNELS: &str = "/admin/api-keys/{id}/sales-channels";
    const CHANNEL: &str = "/admin/sales-channels/{id}";
    vec![
        route(GET, "/admin/api-keys", ApiKeysRead, admin::list_keys),
        route(POST, "/admin/api-keys", ApiKeysWrite, admin::create_key),
        route(GET, KEY, ApiKeysRead, admin::get_key),
        route(POST, KEY, ApiKeysWrite, admin::update_key),
        route(DELETE, KEY, ApiKeysWrite, admin::delete_key),
        route(POST, "/admin/api-keys/{id}/revoke", ApiKeysWrite, admin::revoke_key),
        route(POST, "/admin/api-keys/{id}/roll", ApiKeysWrite, admin::roll_key),
        route(POST, KEY_CHANNELS, ApiKeysWrite, admin::link_channels),
        route(GET, "/admin/sales-channels", SalesChannelsRead, admin::list_channels),
        route(POST, "/admin/sales-channels", SalesChannelsWrite, admin::create_channel),
        route(GET, CHANNEL, SalesChannelsRead, admin::get_channel),
        route(POST, CHANNEL, SalesChannelsWrite, admin::update_channel),
        route(DELETE, CHANNEL, SalesChannelsWrite, admin::delete_channel),
        route(GET, "/admin/users/me", UsersRead, admin::me),
        route(GET, "/admin/workflow-runs", WorkflowsRead, activity::workflow_runs),
        route(GET, "/admin/events", WorkflowsRead, activity::events),
        route(POST, "/v1/keys/verify", KeysVerify, store::verify_key),
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
        .map(|(_, _, p)| p.clone())
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
