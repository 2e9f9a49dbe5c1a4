//! `vibehq nats-auth`: the server side of "nobody acts as someone else".

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use vibehq_nats::permissions::{self, Worker};

/// Write a nats-server authorization file and one nkey per identity, so the server itself
/// lets each worker act only as itself.
///
/// Writes into --out: `auth.conf` (an `authorization { users = [...] }` block: the service's
/// nkey with every permission, and one nkey per --worker allowed to append only its own task
/// events, pull only the lanes it may take from, and call RPC only as itself), `service.nk`,
/// and `<worker>.nk` for each worker (seeds, readable by the owner only). Include `auth.conf`
/// in the server's configuration (`include ./auth.conf`), run `vibehq up --nats-nkey
/// service.nk` and each `vibehq worker --worker-name W --nats-nkey W.nk`. Run it again with
/// more workers to add some (existing seeds are kept unless --rotate).
#[derive(Debug, Args)]
pub struct NatsAuthArgs {
    /// A worker to issue credentials for: `NAME`, or `NAME:CONTAINER,CONTAINER` to also let
    /// it pull the tasks targeted at those containers. Repeatable.
    #[arg(long = "worker", value_name = "NAME[:CONTAINERS]", required = true)]
    workers: Vec<String>,
    /// The directory to write into (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Issue new keys for every identity, replacing the seeds in --out.
    #[arg(long)]
    rotate: bool,
}

pub fn run(args: NatsAuthArgs) -> Result<()> {
    let mut workers = Vec::new();
    for spec in &args.workers {
        let worker = Worker::parse(spec).map_err(|e| anyhow::anyhow!("--worker {spec}: {e}"))?;
        if worker.name == "service" {
            bail!("--worker service: that name is the service's own key file; choose another");
        }
        workers.push(worker);
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let mut users = vec![user(&args.out, "service", None, args.rotate)?];
    for worker in &workers {
        let permissions = Some(permissions::worker(worker));
        users.push(user(&args.out, &worker.name, permissions, args.rotate)?);
    }
    let conf = args.out.join("auth.conf");
    let text = format!(
        "# Written by `vibehq nats-auth` for: service, {}.\n# Include it in the server's configuration: include ./auth.conf\n{}",
        workers
            .iter()
            .map(|w| w.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        permissions::authorization(&users)
    );
    std::fs::write(&conf, text).with_context(|| format!("cannot write {}", conf.display()))?;
    println!("wrote {}", conf.display());
    println!(
        "run: vibehq up --nats-url nats://<server>:4222 --nats-nkey {}",
        args.out.join("service.nk").display()
    );
    for worker in &workers {
        println!(
            "run: vibehq worker --worker-name {} --nats-url nats://<server>:4222 --nats-nkey {} …",
            worker.name,
            args.out.join(format!("{}.nk", worker.name)).display()
        );
    }
    Ok(())
}

/// `name`'s user: from its seed file in `dir` if there is one (and not `rotate`), otherwise a
/// new key whose seed is written there, readable by its owner only.
fn user(
    dir: &Path,
    name: &str,
    permissions: Option<permissions::Permissions>,
    rotate: bool,
) -> Result<permissions::User> {
    let path = dir.join(format!("{name}.nk"));
    if !rotate && path.exists() {
        let seed = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let key = nkeys::KeyPair::from_seed(seed.trim())
            .map_err(|e| anyhow::anyhow!("{} is not an nkey seed: {e}", path.display()))?;
        return Ok(permissions::User {
            credential: permissions::Credential::Nkey(key.public_key()),
            permissions,
        });
    }
    let issued = permissions::issue(permissions);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    writeln!(file, "{}", issued.seed.expose())
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!(
        "wrote {} (a secret: give it only to {name})",
        path.display()
    );
    Ok(issued.user)
}
