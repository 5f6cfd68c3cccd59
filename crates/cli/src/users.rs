//! `keyward user …`: admin users of the dashboard and the admin API.

use keyward::Workflows;
use serde_json::json;

use super::{Failure, Outcome, UserCommand};

pub(crate) async fn users(flows: &Workflows, cmd: UserCommand, json: bool) -> Result<Outcome, Failure> {
    let kw = flows.kw();
    match cmd {
        UserCommand::Create { email, password } => {
            let user = flows.create_user(&email, &password).await?;
            Ok(Outcome::ok(if json {
                format!("{}\n", json!({ "user": user }))
            } else {
                format!("created user {} ({})\n", user.email, user.id)
            }))
        }
        UserCommand::Password { email, password } => {
            let user = kw.change_password(&email, &password).await?;
            Ok(Outcome::ok(if json {
                format!("{}\n", json!({ "user": user, "sessions_ended": true }))
            } else {
                format!("changed the password of {}; its sessions have ended\n", user.email)
            }))
        }
        UserCommand::Delete { email } => {
            let user = kw.delete_user(&email).await?;
            Ok(Outcome::ok(if json {
                format!("{}\n", json!({ "id": user.id, "object": "user", "deleted": true }))
            } else {
                format!("deleted user {} ({}); its sessions have ended\n", user.email, user.id)
            }))
        }
    }
}
