//! Optional proxy authentication (`Proxy-Authorization: Basic`), mapping
//! each user to a named policy so one proxy can serve teams with different
//! allowlists. Passwords are stored as Argon2id PHC strings
//! (`egressd hash-password`). Failed attempts are rate-limited per client.
//!
//! ```toml
//! [[user]]
//! name = "alice"
//! password = "$argon2id$v=19$m=19456,t=2,p=1$..."
//! policy = "team-a.toml"      # relative to this file; default: the proxy's policy
//! ```
//!
//! SIGHUP rereads the file and its policies; if that fails the old users
//! stay. Credentials verified before a reload are verified again.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordVerifier};
use base64::Engine;
use http::HeaderMap;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::policy::Policy;

/// Failed attempts allowed per client address in [`FAIL_WINDOW`].
pub const MAX_FAILURES: u32 = 10;
pub const FAIL_WINDOW: Duration = Duration::from_secs(60);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthFile {
    #[serde(default)]
    user: Vec<UserEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    name: String,
    password: String,
    policy: Option<String>,
}

struct User {
    name: Arc<str>,
    hash: String,
    /// `None`: the proxy's own policy.
    policy: Option<Arc<Policy>>,
}

/// Who a request is from, once authenticated.
#[derive(Clone)]
pub struct Principal {
    pub user: Arc<str>,
    pub policy: Option<Arc<Policy>>,
}

pub use crate::access::event::AuthError;

/// One loading of the credentials file.
struct Users {
    /// Counts loadings: a cached verification counts only for its own.
    generation: u64,
    by_name: HashMap<String, User>,
}

/// The users and their policies, plus the state that makes checking cheap
/// (a cache of verified credentials) and safe (failure counts).
pub struct Authenticator {
    path: PathBuf,
    users: arc_swap::ArcSwap<Users>,
    /// sha256(header value) of credentials already verified: user name and
    /// the generation of the users that verified them.
    verified: Mutex<HashMap<[u8; 32], (String, u64)>>,
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("users", &self.users.load().by_name.len())
            .finish()
    }
}

impl Authenticator {
    /// Loads a credentials file and the policies it names.
    pub fn load(path: &Path) -> Result<Authenticator, String> {
        Ok(Authenticator {
            path: path.to_path_buf(),
            users: arc_swap::ArcSwap::from_pointee(Users {
                generation: 0,
                by_name: read_users(path)?,
            }),
            verified: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
        })
    }

    /// Rereads the credentials file and its policies; on error the users
    /// loaded before stay. Returns how many users there are now.
    pub fn reload(&self) -> Result<usize, String> {
        let by_name = read_users(&self.path)?;
        let n = by_name.len();
        let generation = self.users.load().generation + 1;
        self.users.store(Arc::new(Users { generation, by_name }));
        self.verified.lock().unwrap_or_else(|e| e.into_inner()).clear();
        Ok(n)
    }

    /// The credentials file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Calls `f` with each user policy loaded.
    pub fn for_each_policy(&self, mut f: impl FnMut(&Policy)) {
        for u in self.users.load().by_name.values() {
            if let Some(p) = &u.policy {
                f(p);
            }
        }
    }
}

/// Reads a credentials file and compiles the policies it names.
fn read_users(path: &Path) -> Result<HashMap<String, User>, String> {
    let src = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let file: AuthFile = toml::from_str(&src).map_err(|e| format!("{}: {e}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut users = HashMap::new();
    let mut policies: HashMap<String, Arc<Policy>> = HashMap::new();
    for u in file.user {
        PasswordHash::new(&u.password).map_err(|e| {
            format!(
                "{}: user {:?}: password is not a PHC hash: {e}",
                path.display(),
                u.name
            )
        })?;
        let policy = match &u.policy {
            None => None,
            Some(p) => {
                if let Some(existing) = policies.get(p) {
                    Some(existing.clone())
                } else {
                    let full = base.join(p);
                    let compiled = Arc::new(Policy::load(Some(&full)).map_err(|e| e.to_string())?);
                    policies.insert(p.clone(), compiled.clone());
                    Some(compiled)
                }
            }
        };
        let name = u.name.clone();
        let user = User {
            name: u.name.as_str().into(),
            hash: u.password,
            policy,
        };
        if users.insert(name.clone(), user).is_some() {
            return Err(format!("{}: user {name:?} appears twice", path.display()));
        }
    }
    Ok(users)
}

impl Authenticator {
    fn rate_limited(&self, ip: IpAddr) -> bool {
        let m = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        m.get(&ip)
            .is_some_and(|(since, n)| *n >= MAX_FAILURES && since.elapsed() < FAIL_WINDOW)
    }

    fn record_failure(&self, ip: IpAddr) {
        let mut m = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let e = m.entry(ip).or_insert((Instant::now(), 0));
        if e.0.elapsed() >= FAIL_WINDOW {
            *e = (Instant::now(), 0);
        }
        e.1 += 1;
        if m.len() > 100_000 {
            m.retain(|_, (since, _)| since.elapsed() < FAIL_WINDOW);
        }
    }

    /// Checks a request's `Proxy-Authorization`.
    pub fn check(&self, headers: &HeaderMap, client: IpAddr) -> Result<Principal, AuthError> {
        self.check_field(headers, http::header::PROXY_AUTHORIZATION, client)
    }

    /// Checks the same credentials carried in `field` (the admin pages
    /// read `Authorization`, as a browser sends it to a server).
    pub fn check_field(
        &self,
        headers: &HeaderMap,
        field: http::header::HeaderName,
        client: IpAddr,
    ) -> Result<Principal, AuthError> {
        if self.rate_limited(client) {
            return Err(AuthError::RateLimited);
        }
        let Some(value) = headers.get(field) else {
            return Err(AuthError::Missing);
        };
        let users = self.users.load();
        let key: [u8; 32] = Sha256::digest(value.as_bytes()).into();
        let cached = self
            .verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .filter(|(_, generation)| *generation == users.generation)
            .map(|(name, _)| name.clone());
        let name = match cached {
            Some(name) => name,
            None => match verify(&users.by_name, value.as_bytes()) {
                Some(name) => {
                    let mut v = self.verified.lock().unwrap_or_else(|e| e.into_inner());
                    if v.len() > 10_000 {
                        v.clear();
                    }
                    v.insert(key, (name.clone(), users.generation));
                    name
                }
                None => {
                    self.record_failure(client);
                    return Err(AuthError::Failed);
                }
            },
        };
        let u = users.by_name.get(&name).ok_or(AuthError::Failed)?;
        Ok(Principal {
            user: u.name.clone(),
            policy: u.policy.clone(),
        })
    }
}

/// The user whose `Basic` credentials `value` carries, if the password is right.
fn verify(users: &HashMap<String, User>, value: &[u8]) -> Option<String> {
    let value = std::str::from_utf8(value).ok()?;
    let (scheme, b64) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let raw = String::from_utf8(raw).ok()?;
    let (user, pass) = raw.split_once(':')?;
    let u = users.get(user)?;
    let hash = PasswordHash::new(&u.hash).ok()?;
    argon2::Argon2::default()
        .verify_password(pass.as_bytes(), &hash)
        .ok()?;
    Some(user.to_string())
}

/// An Argon2id PHC hash of `password`, for the credentials file.
pub fn hash_password(password: &str) -> Result<String, String> {
    use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_passwords_cache_and_rate_limit() {
        let dir = std::env::temp_dir().join(format!("egressd-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("team.toml"), "allow = [\"team.example.com\"]\n").unwrap();
        let hash = hash_password("s3cret").unwrap();
        std::fs::write(
            dir.join("users.toml"),
            format!("[[user]]\nname = \"alice\"\npassword = \"{hash}\"\npolicy = \"team.toml\"\n"),
        )
        .unwrap();
        let a = Authenticator::load(&dir.join("users.toml")).unwrap();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let header = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(http::header::PROXY_AUTHORIZATION, v.parse().unwrap());
            h
        };
        let good = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("alice:s3cret")
        );
        let p = a.check(&header(&good), ip).unwrap();
        assert_eq!(&*p.user, "alice");
        assert_eq!(p.policy.unwrap().rules().len(), 1);
        assert!(a.check(&header(&good), ip).is_ok(), "cached");
        assert_eq!(a.check(&HeaderMap::new(), ip).err(), Some(AuthError::Missing));
        let bad = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("alice:nope")
        );
        for _ in 0..MAX_FAILURES {
            assert_eq!(a.check(&header(&bad), ip).err(), Some(AuthError::Failed));
        }
        assert_eq!(a.check(&header(&good), ip).err(), Some(AuthError::RateLimited));
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        assert!(a.check(&header(&good), other).is_ok());
    }
}
