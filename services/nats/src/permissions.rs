//! Who may do what on the server: the subject permissions that bind a worker to its name.
//!
//! vibehq's subjects carry identity (a task event's subject names the worker that appended it,
//! an RPC request's subject names its caller, a lane's consumer names its target), so the
//! server itself can enforce that a worker acts only as itself. A worker's credentials may:
//! - append its own task events (`vibehq.tasks.*.<step>.<worker>.*`, for the steps a claimer
//!   records) and nothing else: no submissions, no cancellations, no one else's events;
//! - pull and acknowledge only the lanes it may take from (anyone's work, its worker's, and its
//!   containers'), and read tasks (direct gets) and lane state;
//! - call the RPC services only as itself (`vibehq.rpc.<service>.<op>.<worker>`);
//! - read replies only under its own inbox prefix ([`inbox_prefix`]), and announcements.
//!
//! Everything else (stream and consumer administration, deleting messages, submitting, other
//! workers' lanes and inboxes) is the service's: its credentials have no limits.
//! [`authorization`] renders the `authorization {}` block of a nats-server configuration.

use vibehq_events::StreamKind;
use vibehq_events::task::Step;
use vibehq_events::task::lane::{Lane, MAX_PRIORITY, Target};

/// A worker that gets credentials, and the containers whose targeted lanes it may pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Worker {
    pub name: String,
    pub containers: Vec<String>,
}

impl Worker {
    /// `name` or `name:container,container`; names are vibehq names
    /// ([`vibehq_events::validate_name`]).
    pub fn parse(spec: &str) -> Result<Self, String> {
        let (name, containers) = spec.split_once(':').unwrap_or((spec, ""));
        let check = |what: &str, n: &str| {
            vibehq_events::validate_name(n).map_err(|e| format!("{what} {n:?}: {e}"))
        };
        check("worker", name)?;
        if name.starts_with("vibehq") {
            return Err(format!(
                "worker {name:?}: names starting with vibehq are the service's own (it records \
                 events as vibehq-scheduler and vibehq-dependencies)"
            ));
        }
        let containers: Vec<String> = containers
            .split(',')
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect();
        for container in &containers {
            check("container", container)?;
        }
        Ok(Self {
            name: name.to_owned(),
            containers,
        })
    }
}

/// A new nkey and the user it makes: the public key goes into the server's configuration,
/// the seed to whoever connects as the user (and nowhere else).
#[derive(Debug)]
pub struct Issued {
    pub seed: crate::Secret,
    pub user: User,
}

/// A new nkey user with `permissions` (`None`: everything, for the service).
pub fn issue(permissions: Option<Permissions>) -> Issued {
    let key = nkeys::KeyPair::new_user();
    let seed = key
        .seed()
        .unwrap_or_else(|_| unreachable!("a new key pair has its seed"));
    Issued {
        seed: crate::Secret::new(seed),
        user: User {
            credential: Credential::Nkey(key.public_key()),
            permissions,
        },
    }
}

/// Subjects a user may publish to and subscribe to (`None` on a [`User`]: no limits).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions {
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
}

/// How a user proves who it is to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// An nkey's public key (`U…`); the user holds the seed.
    Nkey(String),
    Password {
        user: String,
        password: String,
    },
}

/// One user of the server's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub credential: Credential,
    /// `None`: everything (the service, operators).
    pub permissions: Option<Permissions>,
}

/// The prefix of a worker's reply subjects: the only replies its credentials may read.
pub fn inbox_prefix(worker: &str) -> String {
    format!("_INBOX_{worker}")
}

/// The steps a claimer records, in its own name.
const CLAIMER_STEPS: [Step; 7] = [
    Step::Assigned,
    Step::Started,
    Step::Progress,
    Step::Completed,
    Step::Failed,
    Step::Requeued,
    Step::Refused,
];

/// The RPC services a worker may call.
const RPC_SERVICES: [&str; 3] = ["tasks", "ai", "containers"];

/// What `worker`'s credentials may do.
pub fn worker(worker: &Worker) -> Permissions {
    let name = &worker.name;
    let tasks = StreamKind::Tasks.name();
    let mut publish: Vec<String> = CLAIMER_STEPS
        .iter()
        .map(|step| format!("vibehq.tasks.*.{}.{name}.*", step.token()))
        .collect();
    publish.extend([
        "$JS.API.INFO".to_owned(),
        format!("$JS.API.STREAM.INFO.{tasks}"),
        format!("$JS.API.DIRECT.GET.{tasks}"),
        format!("$JS.API.CONSUMER.NAMES.{tasks}"),
        format!("$JS.API.CONSUMER.INFO.{tasks}.*"),
        "$SRV.PING.>".to_owned(),
        "$SRV.INFO.>".to_owned(),
    ]);
    let mut targets = vec![Target::Any, Target::Worker(name.clone())];
    targets.extend(worker.containers.iter().map(|c| Target::Container {
        worker: name.clone(),
        container: c.clone(),
    }));
    for band in 0..=MAX_PRIORITY {
        for target in &targets {
            let consumer = Lane::new(band, target.clone()).consumer_name();
            publish.push(format!("$JS.API.CONSUMER.MSG.NEXT.{tasks}.{consumer}"));
            publish.push(format!("$JS.ACK.{tasks}.{consumer}.>"));
        }
    }
    publish.extend(
        RPC_SERVICES
            .iter()
            .map(|service| format!("vibehq.rpc.{service}.*.{name}")),
    );
    Permissions {
        publish,
        subscribe: vec![
            format!("{}.>", inbox_prefix(name)),
            vibehq_events::task::lane::WAKE_SUBJECTS.to_owned(),
            vibehq_events::task::worker_cancel_notices(name),
        ],
    }
}

/// Why a connection cannot act as the worker it says it is.
#[derive(Debug, thiserror::Error)]
pub enum NotActing {
    #[error("the NATS server has no JetStream (start nats-server with -js)")]
    NoJetStream,
    #[error(
        "these NATS credentials may not act as worker {worker}: the server does not let them \
         read {worker}'s replies ({prefix}.>). Use the credentials issued for {worker} \
         (`vibehq nats-auth --worker {worker}` writes {worker}.nk)"
    )]
    OtherWorker { worker: String, prefix: String },
}

/// Checks that `client` (connected with [`inbox_prefix`]`(worker)`) may act as `worker`: a
/// round trip through its inbox, which a server with permissions lets only `worker`'s
/// credentials read. Without server permissions anyone passes.
pub async fn check_acts_as(client: &async_nats::Client, worker: &str) -> Result<(), NotActing> {
    let probe = client.request("$JS.API.INFO", Vec::new().into());
    match tokio::time::timeout(std::time::Duration::from_secs(3), probe).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) if error.kind() == async_nats::RequestErrorKind::NoResponders => {
            Err(NotActing::NoJetStream)
        }
        _ => Err(NotActing::OtherWorker {
            worker: worker.to_owned(),
            prefix: inbox_prefix(worker),
        }),
    }
}

/// The `authorization { users = [...] }` block of a nats-server configuration for `users`.
pub fn authorization(users: &[User]) -> String {
    let quote = |s: &str| serde_json::Value::String(s.to_owned()).to_string();
    let list = |subjects: &[String]| {
        let quoted: Vec<String> = subjects.iter().map(|s| quote(s)).collect();
        format!("[{}]", quoted.join(", "))
    };
    let mut out = String::from("authorization {\n  users = [\n");
    for user in users {
        let who = match &user.credential {
            Credential::Nkey(public) => format!("nkey: {}", quote(public)),
            Credential::Password { user, password } => {
                format!("user: {}, password: {}", quote(user), quote(password))
            }
        };
        match &user.permissions {
            None => out.push_str(&format!("    {{{who}}}\n")),
            Some(p) => out.push_str(&format!(
                "    {{{who}, permissions: {{\n      publish: {{allow: {}}}\n      subscribe: {{allow: {}}}\n    }}}}\n",
                list(&p.publish),
                list(&p.subscribe)
            )),
        }
    }
    out.push_str("  ]\n}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_may_append_pull_and_call_only_as_itself() {
        let permissions = worker(&Worker {
            name: "factory-1".into(),
            containers: vec!["c1".into()],
        });
        let publish = &permissions.publish;
        assert!(publish.contains(&"vibehq.tasks.*.completed.factory-1.*".to_owned()));
        assert!(
            !publish
                .iter()
                .any(|s| s.contains(".submitted.") || s.contains(".cancelled."))
        );
        assert!(
            publish
                .contains(&"$JS.API.CONSUMER.MSG.NEXT.VIBEHQ_TASKS.vibehq-lane-p9-any".to_owned())
        );
        assert!(publish.contains(
            &"$JS.API.CONSUMER.MSG.NEXT.VIBEHQ_TASKS.vibehq-lane-p0-c-c1@factory-1".to_owned()
        ));
        assert!(publish.contains(&"vibehq.rpc.tasks.*.factory-1".to_owned()));
        assert!(
            !publish
                .iter()
                .any(|s| s.contains("STREAM.MSG.DELETE") || s == ">")
        );
        assert!(!publish.iter().any(|s| s.starts_with("vibehq.cancels")));
        // Only the service schedules delayed tasks: a schedules stream lets its publishers
        // purge it, so no worker may publish there.
        assert!(
            !publish
                .iter()
                .any(|s| s.contains("schedules") || s.contains("SCHEDULES"))
        );
        assert_eq!(
            permissions.subscribe,
            [
                "_INBOX_factory-1.>",
                "vibehq.wake.>",
                "vibehq.cancels.factory-1.>"
            ]
        );
    }

    #[test]
    fn the_configuration_lists_every_user_with_their_permissions() {
        let text = authorization(&[
            User {
                credential: Credential::Password {
                    user: "vibehq".into(),
                    password: "pw".into(),
                },
                permissions: None,
            },
            User {
                credential: Credential::Nkey("UABC".into()),
                permissions: Some(Permissions {
                    publish: vec!["a.b".into()],
                    subscribe: vec!["c.>".into()],
                }),
            },
        ]);
        assert!(
            text.contains(r#"{user: "vibehq", password: "pw"}"#),
            "{text}"
        );
        assert!(text.contains(r#"nkey: "UABC""#), "{text}");
        assert!(text.contains(r#"publish: {allow: ["a.b"]}"#), "{text}");
    }
}
