//! `create-users`: an admin user, its password hashed before anything is recorded.

use keyward_flow::{Output, Step, StepResponse, Workflow};

use crate::error::Result;
use crate::events::EventName;
use crate::service::Keyward;

use super::{CREATE_USERS, Cx, Workflows, retried, step_error};

/// The user `create-user` wrote.
const CREATED_USER: Output<crate::model::User> = Output::named("create-user");

/// `create-user`: writes a prepared user (the password already hashed); `user.created`.
pub fn create_user_step() -> Step<Keyward, crate::users::NewUser, crate::model::User> {
    retried(Step::named(
        CREATED_USER,
        |new: crate::users::NewUser, cx: Cx| async move {
            let user = cx.container().insert_prepared_user(&new).await.map_err(step_error)?;
            let data = serde_json::json!({ "id": user.id, "email": user.email });
            Ok(StepResponse::new(user).event(EventName::UserCreated, data))
        },
    ))
}

/// `create-users`: writes a prepared admin user.
pub fn create_users_workflow() -> Workflow<Keyward, crate::users::NewUser, crate::model::User> {
    Workflow::<Keyward, crate::users::NewUser, crate::model::User>::new(CREATE_USERS)
        .step(&create_user_step(), |d| d.input())
        .returns(|d| d.output(CREATED_USER))
}

impl Workflows {
    /// Creates an admin user (the password is hashed before anything is recorded).
    pub async fn create_user(&self, email: &str, password: &str) -> Result<crate::model::User> {
        let new = self.kw().prepare_user(email, password).await?;
        self.answer(&self.create_user, new, "user").await
    }
}
