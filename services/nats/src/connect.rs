//! Connecting to a NATS server or cluster, with whatever credentials it asks for.
//!
//! Production servers almost always require them: a user and password (also accepted in the
//! URL, `nats://user:password@host`), a token, an nkey seed, a `.creds` file (JWT), and TLS
//! with a CA and a client certificate. Every connection is checked for a server new enough for
//! vibehq ([`crate::version`]). No message, error or `Debug` output here shows a secret: URLs
//! are shown with `***` for the password ([`redact`]), and [`Secret`] prints as `***`.

use std::fmt;
use std::path::PathBuf;

use crate::version;

/// A secret (password, token, nkey seed): kept as given, shown as `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// How a client proves who it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Auth {
    /// No credentials (or the user and password in the URL).
    #[default]
    None,
    UserPassword {
        user: String,
        password: Secret,
    },
    Token(Secret),
    /// An nkey seed (`SU…`): the server knows the public key.
    Nkey(Secret),
    /// A `.creds` file: a user JWT and its nkey seed (decentralized auth, `nsc`).
    Creds(PathBuf),
}

/// TLS towards the server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tls {
    /// A CA certificate (PEM) to trust besides the system's.
    pub ca: Option<PathBuf>,
    /// A client certificate and its key (PEM), for servers that verify clients.
    pub client: Option<(PathBuf, PathBuf)>,
    /// Refuse to talk without TLS (implied by any of the above, and by `tls://` URLs).
    pub required: bool,
}

/// Where and how to connect.
#[derive(Debug, Clone, Default)]
pub struct Connection {
    /// One server or several, comma-separated (`nats://n1:4222,nats://n2:4222`); the client
    /// learns the rest of a cluster from the first that answers.
    pub url: String,
    pub auth: Auth,
    pub tls: Tls,
    /// The prefix of this client's reply subjects. Under server permissions a worker may read
    /// only replies under its own prefix ([`crate::permissions::inbox_prefix`]).
    pub inbox_prefix: Option<String>,
    /// The connection's name, as the server's monitoring shows it.
    pub name: String,
}

/// Why a connection could not be made. No variant holds a secret.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid NATS URL {shown:?}: expected nats://host:port, several separated by commas")]
    InvalidUrl { shown: String },
    #[error("cannot read the NATS credentials file {path}: {source}")]
    Credentials {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot reach NATS at {shown}: {reason}. Check the server is running, the URL (--nats-url / \
         VIBEHQ_NATS_URL) and the credentials (--nats-user/--nats-password, --nats-token, \
         --nats-nkey, --nats-creds, TLS), or omit the URL to use the embedded server"
    )]
    Unreachable { shown: String, reason: String },
    #[error(transparent)]
    TooOld(#[from] version::TooOld),
}

impl Connection {
    /// A connection to `url` with no credentials beyond those the URL holds.
    pub fn to(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            name: "vibehq".into(),
            ..Self::default()
        }
    }

    /// Connects, and checks the server's version (from the INFO it greets every client with).
    pub async fn connect(&self) -> Result<async_nats::Client, Error> {
        let shown = redact(&self.url);
        let mut auth = self.auth.clone();
        let mut servers = Vec::new();
        for one in self.url.split(',') {
            let (plain, user) = split_userinfo(one.trim());
            if let (Some((user, password)), Auth::None) = (user, &auth) {
                auth = Auth::UserPassword {
                    user,
                    password: Secret::new(password),
                };
            }
            let server: async_nats::ServerAddr = plain.parse().map_err(|_| Error::InvalidUrl {
                shown: shown.clone(),
            })?;
            servers.push(server);
        }
        let mut options = async_nats::ConnectOptions::new()
            .name(&self.name)
            .event_callback(|event| async move { log(&event) });
        if let Some(prefix) = &self.inbox_prefix {
            options = options.custom_inbox_prefix(prefix);
        }
        options = match auth {
            Auth::None => options,
            Auth::UserPassword { user, password } => {
                options.user_and_password(user, password.expose().to_owned())
            }
            Auth::Token(token) => options.token(token.expose().to_owned()),
            Auth::Nkey(seed) => options.nkey(seed.expose().to_owned()),
            Auth::Creds(path) => {
                options
                    .credentials_file(&path)
                    .await
                    .map_err(|source| Error::Credentials {
                        path: path.clone(),
                        source,
                    })?
            }
        };
        if let Some(ca) = &self.tls.ca {
            options = options.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &self.tls.client {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        if self.tls.required || self.tls.ca.is_some() || self.tls.client.is_some() {
            options = options.require_tls(true);
        }
        let client = options
            .connect(servers)
            .await
            .map_err(|error| Error::Unreachable {
                shown: shown.clone(),
                reason: redact(&error.to_string()),
            })?;
        let info = client.server_info();
        version::check(
            &format!("the server at {shown} ({})", info.server_name),
            &info.version,
        )?;
        Ok(client)
    }
}

/// Says what happened to the connection: a server's refusal (a permissions violation names the
/// subject a client may not use) is a warning, as is losing the server.
fn log(event: &async_nats::Event) {
    use async_nats::Event;
    match event {
        Event::Connected => tracing::info!("connected to NATS"),
        Event::Disconnected => tracing::warn!("disconnected from NATS; reconnecting"),
        Event::LameDuckMode => tracing::warn!("the NATS server is shutting down (lame duck mode)"),
        Event::SlowConsumer(_) | Event::ServerError(_) | Event::ClientError(_) => {
            tracing::warn!(%event, "NATS")
        }
        Event::Draining | Event::Closed => tracing::debug!(%event, "NATS"),
    }
}

/// `nats://user:password@host` → (`nats://host`, the user and password).
fn split_userinfo(url: &str) -> (String, Option<(String, String)>) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_owned(), None);
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            (
                format!("{scheme}://{host}"),
                Some((user.to_owned(), password.to_owned())),
            )
        }
        None => (url.to_owned(), None),
    }
}

/// `url` (one server or several) without the password or token any of it holds:
/// `nats://user:***@host:4222`.
pub fn redact(url: &str) -> String {
    url.split(',')
        .map(|one| {
            let Some((scheme, rest)) = one.split_once("://") else {
                return one.to_owned();
            };
            match rest.rsplit_once('@') {
                Some((userinfo, host)) => {
                    let user = userinfo.split(':').next().unwrap_or_default();
                    format!("{scheme}://{user}:***@{host}")
                }
                None => one.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_is_shown_without_its_password_and_its_user_and_password_are_used() {
        assert_eq!(
            redact("nats://svc:s3cret@n1:4222,nats://n2:4222"),
            "nats://svc:***@n1:4222,nats://n2:4222"
        );
        assert_eq!(redact("nats://n1:4222"), "nats://n1:4222");
        let (plain, user) = split_userinfo("nats://svc:s3cret@n1:4222");
        assert_eq!(plain, "nats://n1:4222");
        assert_eq!(user, Some(("svc".into(), "s3cret".into())));
    }

    #[test]
    fn secrets_never_print() {
        let auth = Auth::UserPassword {
            user: "svc".into(),
            password: Secret::new("s3cret"),
        };
        assert!(!format!("{auth:?}").contains("s3cret"));
    }
}
