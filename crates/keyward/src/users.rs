//! Admin users: email + Argon2id password hash.
//!
//! Hashing is deliberately slow, so it runs on the blocking pool behind a semaphore: a burst of
//! logins cannot starve the async executor that serves key verification. An unknown email is
//! checked against a fixed dummy hash, so "no such user" and "wrong password" take the same time.

use std::sync::{Arc, LazyLock};

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use tokio::sync::Semaphore;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::id::UserId;
use crate::model::User;
use crate::service::Keyward;

/// The shortest password accepted.
pub const MIN_PASSWORD_LEN: usize = 8;

/// At most this many hashes at once; the rest wait.
static HASHING: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(2));

/// A hash of a password nobody knows, for timing-equal refusals of unknown emails.
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
    Argon2::default()
        .hash_password_with_salt(b"keyward-dummy-password", b"keyward-dummy-salt")
        .map(|h| h.to_string())
        .unwrap_or_default()
});

/// A user ready to be written: the password is already a hash (what the `create-users`
/// workflow records; never the password itself).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NewUser {
    pub user: User,
    pub password_hash: String,
}

impl Keyward {
    /// Checks an email and password, hashes the password and fixes the user's id: everything
    /// creating a user needs, nothing written yet.
    pub async fn prepare_user(&self, email: &str, password: &str) -> Result<NewUser> {
        let email = normalise_email(email)?;
        if password.chars().count() < MIN_PASSWORD_LEN {
            return Err(Error::invalid_data(format!(
                "A password needs at least {MIN_PASSWORD_LEN} characters"
            )));
        }
        let mut salt = [0u8; 16];
        self.entropy.fill(&mut salt)?;
        let hash = hash_password(Zeroizing::new(password.to_owned()), salt).await?;
        let now = self.now();
        let user = User {
            id: UserId::generate(self.ids(), now, self.entropy.as_ref())?,
            email,
            first_name: None,
            last_name: None,
            created_at: now,
            updated_at: now,
            deleted_at: None,
        };
        Ok(NewUser {
            user,
            password_hash: hash,
        })
    }

    /// Writes a prepared user unless a user with its id exists already (a step run again).
    pub(crate) async fn insert_prepared_user(&self, new: &NewUser) -> Result<User> {
        if let Some(existing) = self.store.get_user(&new.user.id).await? {
            return Ok(existing);
        }
        self.store.insert_user(&new.user, &new.password_hash).await?;
        Ok(new.user.clone())
    }

    /// The user with this email and password, or `None`. Takes the same time either way.
    pub async fn authenticate_user(&self, email: &str, password: &str) -> Result<Option<User>> {
        let stored = match normalise_email(email) {
            Ok(e) => self.store.find_user_by_email(&e).await?,
            Err(_) => None,
        };
        let (user, hash) = match stored {
            Some(s) => (Some(s.user), s.password_hash),
            None => (None, DUMMY_HASH.clone()),
        };
        let ok = verify_password(Zeroizing::new(password.to_owned()), hash).await?;
        Ok(if ok { user } else { None })
    }

    pub async fn retrieve_user(&self, id: &UserId) -> Result<User> {
        self.store
            .get_user(id)
            .await?
            .ok_or_else(|| Error::not_found(format!("User with id: {id} was not found")))
    }

    pub async fn count_users(&self) -> Result<u64> {
        self.store.count_users().await
    }

    /// Starts a login session for `user`, lasting `ttl_seconds`; its id (128 random bits).
    pub async fn start_session(&self, user: &UserId, ttl_seconds: i64) -> Result<String> {
        let mut bytes = [0u8; 16];
        self.entropy.fill(&mut bytes)?;
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let id = format!("sess_{id}");
        let now = self.now();
        self.store
            .insert_session(&id, user, now, now.plus_seconds(ttl_seconds))
            .await?;
        Ok(id)
    }

    /// Whether a session is live: not ended, not expired, its user still there. Answered from
    /// the verification cache when it holds the session: a logout, a password change or a
    /// user's deletion on any node reaches it as a change, like a revocation. Expiry is not
    /// re-judged from the cache: a session ends when its login token does, and the token's own
    /// expiry is checked on every request.
    pub async fn session_is_live(&self, id: &str) -> Result<bool> {
        let (cache, now) = (self.store.cache(), self.now());
        if let Some(live) = cache.session(id, now) {
            return Ok(live);
        }
        let fill = cache.begin_fill();
        let live = self.store.session_is_live(id, now).await?;
        cache.fill_session(fill, id, live, now);
        Ok(live)
    }

    /// Ends a session (logout); whether it was live.
    pub async fn end_session(&self, id: &str) -> Result<bool> {
        self.store.end_session(id, self.now()).await
    }

    /// Sets a user's password and ends all its sessions (`not_found` for an unknown email).
    pub async fn change_password(&self, email: &str, password: &str) -> Result<User> {
        let hashed = self.prepare_user(email, password).await?;
        let user = self
            .store
            .find_user_by_email(&hashed.user.email)
            .await?
            .ok_or_else(|| Error::not_found(format!("No user has the email {}", hashed.user.email)))?
            .user;
        self.store
            .set_user_password(&user.id, &hashed.password_hash, self.now())
            .await?;
        Ok(user)
    }

    /// Deletes a user and ends all its sessions (`not_found` for an unknown email).
    pub async fn delete_user(&self, email: &str) -> Result<User> {
        let email = normalise_email(email)?;
        let user = self
            .store
            .find_user_by_email(&email)
            .await?
            .ok_or_else(|| Error::not_found(format!("No user has the email {email}")))?
            .user;
        self.store.delete_user(&user.id, self.now()).await?;
        Ok(user)
    }
}

fn normalise_email(email: &str) -> Result<String> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= 254
        && email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty() && !domain.contains('@'))
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if valid {
        Ok(email)
    } else {
        Err(Error::invalid_data(format!("'{email}' is not an email address")))
    }
}

async fn hash_password(password: Zeroizing<String>, salt: [u8; 16]) -> Result<String> {
    let _permit = HASHING
        .acquire()
        .await
        .map_err(|_| Error::unexpected("password hashing is shut down"))?;
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password_with_salt(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| Error::unexpected(format!("argon2 failed: {e}")))
    })
    .await
    .map_err(|e| Error::unexpected(format!("password hashing task failed: {e}")))?
}

async fn verify_password(password: Zeroizing<String>, hash: String) -> Result<bool> {
    let _permit = HASHING
        .acquire()
        .await
        .map_err(|_| Error::unexpected("password hashing is shut down"))?;
    let hash = Arc::new(hash);
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .verify_password(password.as_bytes(), hash.as_str())
            .is_ok()
    })
    .await
    .map_err(|e| Error::unexpected(format!("password check task failed: {e}")))
}
