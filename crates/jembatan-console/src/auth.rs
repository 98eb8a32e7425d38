//! Who may use the console: the one-time token printed at start, users
//! with argon2-hashed passwords, sessions held in memory behind an
//! HttpOnly SameSite=Strict cookie, and the CSRF token every POST carries.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use rand::RngCore;

use crate::config::User;

/// Name of the session cookie (`_<port>` follows: browsers send a host's
/// cookies to every port, so two consoles on one host keep theirs apart).
pub const SESSION_COOKIE: &str = "jembatan_console";
/// Name of the cookie that carries the login form's CSRF token (`_<port>`
/// follows).
pub const LOGIN_COOKIE: &str = "jembatan_login";
/// Name of the language cookie.
pub const LANG_COOKIE: &str = "jembatan_lang";
/// Most sessions held at once; the oldest goes first.
const MAX_SESSIONS: usize = 1000;

/// 32 random bytes as hex.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Compares two secrets without an early exit.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// A logged-in user.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: String,
    /// The token each of this session's forms carries.
    pub csrf: String,
    expires: Instant,
}

/// The console's logins.
#[derive(Debug)]
pub struct Auth {
    /// The start token, until it is used.
    token: Mutex<Option<String>>,
    users: Vec<User>,
    sessions: Mutex<HashMap<String, Session>>,
    ttl: Duration,
    /// Checked when the user is unknown, so that a wrong name takes as
    /// long as a wrong password.
    decoy: String,
}

/// Why a login failed (the page says only "not accepted").
#[derive(Debug, PartialEq, Eq)]
pub enum LoginRefused {
    Token,
    Password,
}

impl Auth {
    pub fn new(token: String, users: Vec<User>, ttl: Duration) -> Auth {
        Auth {
            token: Mutex::new(Some(token)),
            users,
            sessions: Mutex::new(HashMap::new()),
            ttl,
            decoy: hash_password("decoy password of no user").unwrap_or_default(),
        }
    }

    /// Logs in with the start token; it works once.
    pub fn login_with_token(&self, given: &str) -> Result<(String, Session), LoginRefused> {
        let mut token = self
            .token
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match token.as_deref() {
            Some(t) if same_secret(t, given.trim()) => {
                *token = None;
                drop(token);
                Ok(self.open("token"))
            }
            _ => Err(LoginRefused::Token),
        }
    }

    /// Logs in with a configured user's password.
    pub fn login_with_password(
        &self,
        name: &str,
        password: &str,
    ) -> Result<(String, Session), LoginRefused> {
        let user = self.users.iter().find(|u| u.name == name);
        let hash = user.map_or(self.decoy.as_str(), |u| u.password_hash.as_str());
        let ok = PasswordHash::new(hash)
            .map(|h| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false);
        match user {
            Some(u) if ok => Ok(self.open(&u.name)),
            _ => Err(LoginRefused::Password),
        }
    }

    fn open(&self, user: &str) -> (String, Session) {
        let id = random_token();
        let session = Session {
            user: user.to_owned(),
            csrf: random_token(),
            expires: Instant::now() + self.ttl,
        };
        let mut sessions = self
            .sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(id.clone(), session.clone());
        (id, session)
    }

    /// The session a cookie names, while it lasts.
    pub fn session(&self, id: &str) -> Option<Session> {
        let sessions = self
            .sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        sessions
            .get(id)
            .filter(|s| s.expires > Instant::now())
            .cloned()
    }

    pub fn logout(&self, id: &str) {
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(id);
    }

    /// Whether the start token is still unused.
    pub fn token_unused(&self) -> bool {
        self.token
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some()
    }
}

/// An argon2id PHC string for `password`, for the config's `[[users]]`.
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    let salt = argon2::password_hash::SaltString::encode_b64(&bytes)?;
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|part| {
        let (k, v) = part.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, the whole site.
pub fn set_cookie(name: &str, value: &str, max_age: Option<Duration>) -> String {
    let age = max_age.map_or(String::new(), |d| format!("; Max-Age={}", d.as_secs()));
    format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict{age}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_works_once() {
        let auth = Auth::new("abc".into(), vec![], Duration::from_secs(60));
        assert_eq!(
            auth.login_with_token("abd").unwrap_err(),
            LoginRefused::Token
        );
        let (id, _) = auth.login_with_token("abc").unwrap();
        assert!(auth.session(&id).is_some());
        assert_eq!(
            auth.login_with_token("abc").unwrap_err(),
            LoginRefused::Token
        );
        auth.logout(&id);
        assert!(auth.session(&id).is_none());
    }

    #[test]
    fn passwords_are_checked_against_their_argon2_hash() {
        let user = User {
            name: "inspektorat".into(),
            password_hash: hash_password("rahasia panjang").unwrap(),
        };
        assert!(user.password_hash.starts_with("$argon2id$"));
        let auth = Auth::new("t".into(), vec![user], Duration::from_secs(60));
        assert!(
            auth.login_with_password("inspektorat", "rahasia panjang")
                .is_ok()
        );
        assert!(auth.login_with_password("inspektorat", "salah").is_err());
        assert!(auth.login_with_password("tamu", "rahasia panjang").is_err());
    }

    #[test]
    fn sessions_expire() {
        let auth = Auth::new("t".into(), vec![], Duration::from_millis(1));
        let (id, _) = auth.login_with_token("t").unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert!(auth.session(&id).is_none());
    }

    #[test]
    fn cookies_are_read_by_name_and_set_strict() {
        assert_eq!(
            cookie("a=1; jembatan_console=xyz; b=2", SESSION_COOKIE),
            Some("xyz")
        );
        assert_eq!(cookie("a=1", SESSION_COOKIE), None);
        let c = set_cookie(SESSION_COOKIE, "v", None);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict"));
    }
}
