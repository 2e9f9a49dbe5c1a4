//! `vibehq new worker NAME` (the seed's create-new-worker) writes a worker project from a
//! template, Rust on `vibehq-client` or Python on the vendored Python client; `vibehq new demo
//! NAME` (its create-demo) an AI demo on the gateway. Both print the next steps.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};

/// Scaffold a new worker project.
#[derive(Debug, Args)]
pub struct NewArgs {
    #[command(subcommand)]
    command: NewCommand,
}

#[derive(Debug, Subcommand)]
enum NewCommand {
    /// A worker: claims the tasks targeted at it, runs the commands it handles (`hello` and
    /// `summarize`, an AI call through the gateway, to start from), heartbeats while one runs,
    /// answers /health for the load balancer, and reports each result. With a config file, a
    /// README and a test.
    ///
    /// Example:
    ///   vibehq new worker acme-fixer              (a Rust crate on vibehq-client)
    ///   vibehq new worker acme-fixer --lang python
    #[command(verbatim_doc_comment)]
    Worker {
        /// The worker's name: what it claims and reports as, and the project's folder.
        name: String,
        #[arg(long, value_enum, default_value_t = Lang::Rust)]
        lang: Lang,
        /// Where to create the project's folder.
        #[arg(long, value_name = "DIR", default_value = ".")]
        dir: PathBuf,
        /// Where vibehq's `clients/rust` is, for the Rust project's path dependency [default:
        /// the source tree this binary was built from].
        #[arg(long, value_name = "DIR")]
        client_path: Option<PathBuf>,
        /// The vibehq to register the worker with (`POST /api/workers`) [default:
        /// http://<--http-addr>]; its token from VIBEHQ_TOKEN.
        #[arg(long, env = "VIBEHQ_URL", value_name = "URL")]
        url: Option<String>,
        /// Do not register the worker.
        #[arg(long)]
        no_register: bool,
    },
    /// An AI demo (the seed's create-demo): a Python script on the unmodified `openai`
    /// package pointed at vibehq's `/v1` (a streamed answer routed by complexity, and a tool
    /// the model may call), with a README.
    Demo {
        /// The demo's name: its folder, and the worker its calls are recorded as.
        name: String,
        /// Where to create the demo's folder.
        #[arg(long, value_name = "DIR", default_value = ".")]
        dir: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Lang {
    Rust,
    Python,
}

/// The template files of each language: where each goes, and its text.
const RUST: &[(&str, &str)] = &[
    (
        "Cargo.toml",
        include_str!("../templates/worker-rust/Cargo.toml.tmpl"),
    ),
    (
        "src/main.rs",
        include_str!("../templates/worker-rust/src/main.rs.tmpl"),
    ),
    (
        "src/handlers.rs",
        include_str!("../templates/worker-rust/src/handlers.rs.tmpl"),
    ),
    (
        "src/ai.rs",
        include_str!("../templates/worker-rust/src/ai.rs.tmpl"),
    ),
    (
        "src/config.rs",
        include_str!("../templates/worker-rust/src/config.rs.tmpl"),
    ),
];
const PYTHON: &[(&str, &str)] = &[
    (
        "worker.py",
        include_str!("../templates/worker-python/worker.py.tmpl"),
    ),
    (
        "handlers.py",
        include_str!("../templates/worker-python/handlers.py.tmpl"),
    ),
    (
        "test_handlers.py",
        include_str!("../templates/worker-python/test_handlers.py.tmpl"),
    ),
    // The Python client, vendored: the project needs nothing installed.
    (
        "vibehq_client.py",
        include_str!("../../../clients/python/vibehq_client/__init__.py"),
    ),
];
const CONFIG: &str = include_str!("../templates/vibehq-worker.toml.tmpl");
const README: &str = include_str!("../templates/README.md.tmpl");

pub async fn run(settings: crate::config::Settings, args: NewArgs) -> Result<()> {
    let (name, lang, dir, client_path, url, no_register) = match args.command {
        NewCommand::Worker {
            name,
            lang,
            dir,
            client_path,
            url,
            no_register,
        } => (name, lang, dir, client_path, url, no_register),
        NewCommand::Demo { name, dir } => return demo(&name, &dir),
    };
    let root = new_folder(&dir, &name)?;
    let client_path = match client_path {
        Some(path) => path,
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../clients/rust"),
    };
    let client_path = client_path.canonicalize().with_context(|| {
        format!(
            "vibehq-client is not at {} (give --client-path)",
            client_path.display()
        )
    })?;
    let (files, lang_name, handlers, test, run) = match lang {
        Lang::Rust => (RUST, "Rust", "`src/handlers.rs`", "cargo test", "cargo run"),
        Lang::Python => (
            PYTHON,
            "Python 3.11+",
            "`handlers.py`",
            "python3 -m unittest",
            "python3 worker.py",
        ),
    };
    let fill = |text: &str| {
        text.replace("{{name}}", &name)
            .replace("{{client_path}}", &client_path.to_string_lossy())
            .replace("{{lang}}", lang_name)
            .replace("{{handlers}}", handlers)
            .replace("{{test}}", test)
            .replace("{{run}}", run)
    };
    let mut written = Vec::new();
    for (path, text) in files
        .iter()
        .copied()
        .chain([("vibehq-worker.toml", CONFIG), ("README.md", README)])
    {
        let target = root.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&target, fill(text))
            .with_context(|| format!("cannot write {}", target.display()))?;
        written.push(path);
    }
    println!(
        "created {} ({lang_name}): {}",
        root.display(),
        written.join(", ")
    );
    if !no_register {
        let url = url.unwrap_or_else(|| format!("http://{}", settings.http_addr));
        register(&url, &name, lang).await;
    }
    println!("next:");
    println!("  cd {}", root.display());
    println!("  {test}                      # the handlers' test");
    println!("  VIBEHQ_URL=http://127.0.0.1:8080 {run}   # work for a running vibehq up");
    println!(
        "  curl -s -XPOST localhost:8080/api/tasks -d '{{\"task_type\":\"greeting\",\"command\":\"hello\",\"worker_name\":\"{name}\"}}'"
    );
    Ok(())
}

/// `DIR/NAME`, for a project named NAME (a valid worker name) that does not exist yet.
fn new_folder(dir: &Path, name: &str) -> Result<PathBuf> {
    vibehq_events::validate_name(name)
        .map_err(|e| anyhow::anyhow!("{name:?} cannot be a worker's name: {e}"))?;
    let root = dir.join(name);
    if root.exists() {
        bail!(
            "{} exists already; choose another name or --dir",
            root.display()
        );
    }
    Ok(root)
}

fn demo(name: &str, dir: &Path) -> Result<()> {
    let root = new_folder(dir, name)?;
    std::fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
    for (path, text) in [
        ("demo.py", include_str!("../templates/demo/demo.py.tmpl")),
        (
            "README.md",
            include_str!("../templates/demo/README.md.tmpl"),
        ),
    ] {
        let target = root.join(path);
        std::fs::write(&target, text.replace("{{name}}", name))
            .with_context(|| format!("cannot write {}", target.display()))?;
    }
    println!("created {}: demo.py, README.md", root.display());
    println!("next:");
    println!("  cd {}", root.display());
    println!("  pip install openai");
    println!("  VIBEHQ_URL=http://127.0.0.1:8080 python3 demo.py");
    Ok(())
}

/// Registers the new worker with the vibehq at `url`; one that cannot be reached is said, not
/// an error: the project is made either way.
async fn register(url: &str, name: &str, lang: Lang) {
    let language = match lang {
        Lang::Rust => "rust",
        Lang::Python => "python",
    };
    let body = serde_json::json!({
        "worker_name": name, "language": language, "commands": ["hello", "summarize"],
    });
    let endpoint = format!("{}/api/workers", url.trim_end_matches('/'));
    let mut request = reqwest::Client::new().post(&endpoint).json(&body);
    if let Ok(token) = std::env::var("VIBEHQ_TOKEN") {
        request = request.bearer_auth(token.trim());
    }
    match request.send().await {
        Ok(response) if response.status().is_success() => {
            println!("registered {name} with {url} (GET {url}/api/workers lists it)");
        }
        Ok(response) => {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            println!("not registered: {endpoint} answered {status}: {text}");
        }
        Err(_) => println!(
            "not registered: no vibehq answered at {url}; once `vibehq up` runs: \
             curl -XPOST {endpoint} -d '{body}'"
        ),
    }
}
