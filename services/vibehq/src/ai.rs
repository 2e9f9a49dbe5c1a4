//! `vibehq ai`: the seed's `aicli`, a command-line client of a running vibehq's AI REST API
//! (`/api/ai/…`, served by `vibehq up`).
//!
//! Each subcommand is one HTTP request. `ask` and `run` read their answer as Server-Sent Events
//! and print the text as the model writes it. Any refusal, a non-2xx answer or an `error` event,
//! becomes this command's error carrying the server's message and the field at fault, so the
//! process exits non-zero.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use reqwest::{Method, Response, StatusCode, Url};
use serde_json::{Map, Value, json};

use crate::config::Settings;

/// Where the AI API is and who is calling it; shared by every `vibehq ai` subcommand.
#[derive(Debug, Args)]
#[command(next_help_heading = "Server and caller")]
pub struct AiArgs {
    /// The vibehq HTTP API to call, plain http:// as `vibehq up` serves it [default:
    /// http://<--http-addr>, so http://127.0.0.1:8080 unless configured]
    #[arg(long, env = "VIBEHQ_URL", global = true, value_name = "URL")]
    url: Option<String>,
    /// Bearer token, for a server started with --api-token; sent as `Authorization: Bearer …`
    /// and never printed.
    #[arg(
        long,
        env = "VIBEHQ_TOKEN",
        global = true,
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    token: Option<Secret>,
    /// Who is calling: every call is recorded under this worker_name, and a decision on an
    /// approval names it as the decider.
    #[arg(
        long,
        env = "VIBEHQ_WORKER_NAME",
        global = true,
        default_value = "cli",
        value_name = "NAME"
    )]
    worker_name: String,
    /// The container to record calls under, if any.
    #[arg(
        long,
        env = "VIBEHQ_CONTAINER_NAME",
        global = true,
        value_name = "NAME"
    )]
    container_name: Option<String>,
    /// Print the server's JSON answer instead of the human form (`ask` and `run` then wait for
    /// the whole answer instead of streaming it).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Ask a model once, through the gateway; the answer is printed as it is written.
    ///
    /// If a provider fails before answering, the next configured one is tried. The provider
    /// and model that answered, the attempts and the request id (for `vibehq audit ai-call`)
    /// are printed on stderr.
    Ask {
        /// The prompt; `-` reads it from stdin.
        prompt: String,
        /// A system prompt.
        #[arg(long, value_name = "TEXT")]
        system: Option<String>,
        #[command(flatten)]
        model: Model,
        /// Wait for the whole answer instead of streaming it.
        #[arg(long)]
        no_stream: bool,
    },
    /// Show the tier and model the router would choose for a prompt, and why.
    Route {
        /// The prompt; `-` reads it from stdin.
        prompt: String,
    },
    /// Get an answer that satisfies a JSON Schema; invalid answers are retried with their
    /// validation errors. Prints the valid JSON.
    Structured {
        /// The prompt; `-` reads it from stdin.
        prompt: String,
        /// A file holding the JSON Schema the answer must satisfy.
        #[arg(long, value_name = "FILE")]
        schema: PathBuf,
        /// Answers to try before giving up, 1 to 10 [default: 3]
        #[arg(long, value_name = "N")]
        max_attempts: Option<u32>,
        #[command(flatten)]
        model: Model,
    },
    /// List the tools a model (or `vibehq ai call`) may call.
    Tools,
    /// Call a tool directly; its arguments are checked against its schema. Prints its result.
    Call {
        /// The tool's name (see `vibehq ai tools`).
        tool: String,
        /// The arguments, a JSON object [default: {}]
        #[arg(long = "args", value_name = "JSON")]
        arguments: Option<String>,
    },
    /// Let a model answer with tools: it calls them, reads their results, then answers.
    ///
    /// The answer is printed as it is written; each tool call (→) and its result (←) are
    /// printed on stderr.
    Run {
        /// The prompt; `-` reads it from stdin.
        prompt: String,
        /// A system prompt.
        #[arg(long, value_name = "TEXT")]
        system: Option<String>,
        /// The tools the model may use, comma-separated [default: all]
        #[arg(long, value_delimiter = ',', value_name = "NAMES")]
        tools: Vec<String>,
        /// Model turns at most, 1 to 20 [default: 5]
        #[arg(long, value_name = "N")]
        max_steps: Option<u32>,
        #[command(flatten)]
        model: Model,
    },
    /// Generate an answer, have a model score it against criteria, and improve it until the
    /// score reaches a threshold. Prints each round, then the best answer.
    Evaluate {
        /// The prompt; `-` reads it from stdin.
        prompt: String,
        /// What a good answer does, in words.
        #[arg(long, value_name = "TEXT")]
        criteria: String,
        /// The score, 0 to 1, that passes [default: 0.8]
        #[arg(long, value_name = "F")]
        threshold: Option<f64>,
        /// Rounds at most, 1 to 10 [default: 3]
        #[arg(long, value_name = "N")]
        max_rounds: Option<u32>,
        #[command(flatten)]
        model: Model,
    },
    /// Turn a goal into a plan of agent steps and run it up to the first step that needs a
    /// human's approval.
    Plan {
        /// What the plan should achieve; `-` reads it from stdin.
        goal: String,
        /// A file holding the steps as a JSON array of `{title, description?,
        /// requires_approval?, command?}`, instead of letting the model propose them.
        #[arg(long, value_name = "FILE")]
        steps: Option<PathBuf>,
    },
    /// Write a README for a worker's folder from its code and config, through the gateway
    /// (the seed's readme-generator).
    ///
    /// Reads the folder's source and config files (Rust, Python, TypeScript/JavaScript, TOML,
    /// JSON, YAML, shell, Dockerfile; not target/, node_modules/ or dot folders; at most 16 KiB
    /// a file and 96 KiB in all, the rest named but not sent), asks the model for a README of
    /// what the worker does, how to configure, run and test it, and writes PATH/README.md. An
    /// existing README is kept unless --force.
    Readme {
        /// The worker's folder.
        path: PathBuf,
        /// Where to write it; `-` prints it [default: PATH/README.md].
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Replace an existing README.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        model: Model,
    },
    /// Show a plan's steps and its approvals.
    PlanStatus {
        /// The plan's id, as `vibehq ai plan` printed it.
        plan_id: String,
    },
    /// Approve a step waiting for a human; its plan continues. Prints the plan.
    Approve(Decision),
    /// Reject a step waiting for a human; its plan stops. Prints the plan.
    Reject(Decision),
}

/// A human's decision on a waiting step.
#[derive(Debug, Args)]
struct Decision {
    /// The approval's id, as `vibehq ai plan` and `plan-status` print it.
    approval_id: String,
    /// Why, recorded with the decision.
    #[arg(long, value_name = "TEXT")]
    comment: Option<String>,
}

impl Decision {
    /// Approves or rejects (`verb`) the step; answers its plan after the decision.
    async fn send(self, api: &Api, verb: &str) -> Result<Value> {
        let body = json!({ "comment": self.comment });
        api.post(&["approvals", &self.approval_id, verb], body)
            .await
    }
}

/// Which model answers.
#[derive(Debug, Args)]
struct Model {
    /// The size of model to use [default: medium]
    #[arg(long, value_parser = ["small", "medium", "large"])]
    tier: Option<String>,
    /// Try this configured provider first.
    #[arg(long, value_name = "NAME")]
    provider: Option<String>,
}

/// A bearer token. Its `Debug` is redacted so it cannot be printed by accident.
#[derive(Clone)]
struct Secret(String);

impl From<String> for Secret {
    fn from(token: String) -> Self {
        Self(token.trim().to_owned())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Runs one `vibehq ai` subcommand: a request to the AI API, its answer printed. Errors if the
/// server cannot be reached or refuses (a non-2xx answer, or an `error` event while streaming),
/// with the server's message and the field at fault.
pub async fn run(settings: Settings, args: AiArgs) -> Result<()> {
    let api = Api::new(&settings, &args)?;
    // The server's answer as JSON with --json, else in the human form.
    let show = |answer: &Value, human: &dyn Fn(&Value)| {
        if args.json {
            println!("{answer:#}");
        } else {
            human(answer);
        }
    };
    match args.command {
        Command::Ask {
            prompt,
            system,
            model,
            no_stream,
        } => {
            let body = json!({
                "prompt": or_stdin(prompt)?, "system": system,
                "tier": model.tier, "provider": model.provider,
            });
            if no_stream || args.json {
                let reply = api.post(&["ask"], body).await?;
                show(&reply, &|reply| {
                    println!("{}", field(&reply["answer"], "text"));
                    eprintln!("{}", summary(reply));
                });
                return Ok(());
            }
            let mut screen = Screen::default();
            let done = api
                .stream(&["ask"], body, |name, data| match name {
                    "delta" => screen.delta(data),
                    _ => Ok(()),
                })
                .await;
            screen.end_line()?;
            eprintln!("{}", summary(&done?));
        }
        Command::Route { prompt } => {
            let body = json!({ "prompt": or_stdin(prompt)? });
            show(&api.post(&["route"], body).await?, &print_route);
        }
        Command::Structured {
            prompt,
            schema,
            max_attempts,
            model,
        } => {
            let schema = read_json(&schema, "JSON Schema file")?;
            let body = json!({
                "prompt": or_stdin(prompt)?, "schema": schema,
                "max_attempts": max_attempts, "tier": model.tier, "provider": model.provider,
            });
            show(&api.post(&["structured"], body).await?, &|out| {
                println!("{:#}", out["output"]);
                eprintln!(
                    "{}/{}, {}, output {}",
                    field(out, "provider"),
                    field(out, "model"),
                    count(out, "attempts", "attempt"),
                    field(out, "output_id")
                );
            });
        }
        Command::Tools => show(&api.get(&["tools"]).await?, &|tools| {
            let tools = list(tools);
            let width = tools.iter().map(|t| field(t, "name").len()).max();
            let width = width.unwrap_or_default();
            for tool in tools {
                println!(
                    "{:<width$}  {}",
                    field(tool, "name"),
                    field(tool, "description")
                );
            }
        }),
        Command::Call { tool, arguments } => {
            let arguments: Value = match arguments {
                Some(text) => serde_json::from_str(&text).context("--args is not JSON")?,
                None => json!({}),
            };
            let body = json!({ "arguments": arguments });
            show(&api.post(&["tools", &tool], body).await?, &|called| {
                println!("{:#}", called["result"]);
            });
        }
        Command::Run {
            prompt,
            system,
            tools,
            max_steps,
            model,
        } => {
            let body = json!({
                "prompt": or_stdin(prompt)?, "system": system,
                "tools": (!tools.is_empty()).then_some(tools), "max_steps": max_steps,
                "tier": model.tier, "provider": model.provider,
            });
            if args.json {
                println!("{:#}", api.post(&["runs"], body).await?);
                return Ok(());
            }
            let mut screen = Screen::default();
            let done = api
                .stream(&["runs"], body, |name, event| match name {
                    "step" => {
                        screen.calls.clear();
                        Ok(())
                    }
                    "delta" => screen.delta(&event["delta"]),
                    "tool_result" => screen.tool_result(event),
                    _ => Ok(()),
                })
                .await;
            screen.end_line()?;
            let done = done?;
            eprintln!(
                "{}/{}, {}, {}, run {}",
                field(&done, "provider"),
                field(&done, "model"),
                count(&done, "steps", "step"),
                field(&done, "stopped"),
                field(&done, "run_id")
            );
        }
        Command::Evaluate {
            prompt,
            criteria,
            threshold,
            max_rounds,
            model,
        } => {
            let body = json!({
                "prompt": or_stdin(prompt)?, "criteria": criteria,
                "threshold": threshold, "max_rounds": max_rounds,
                "tier": model.tier, "provider": model.provider,
            });
            show(&api.post(&["evaluate"], body).await?, &print_evaluation);
        }
        Command::Readme {
            path,
            output,
            force,
            model,
        } => {
            let output = output.unwrap_or_else(|| path.join("README.md"));
            let printing = output == Path::new("-");
            if !printing && output.exists() && !force {
                bail!(
                    "{} exists; pass --force to replace it, or --output to write elsewhere",
                    output.display()
                );
            }
            let folder = crate::readme::Folder::read(&path)?;
            eprintln!(
                "read {} files ({} bytes) of {}{}; asking the model…",
                folder.files.len(),
                folder.bytes(),
                path.display(),
                if folder.left_out.is_empty() {
                    String::new()
                } else {
                    format!(", {} more named only", folder.left_out.len())
                }
            );
            let body = json!({
                "prompt": folder.prompt(), "system": crate::readme::SYSTEM,
                "tier": model.tier, "provider": model.provider,
            });
            let reply = api.post(&["ask"], body).await?;
            let text = crate::readme::unfence(field(&reply["answer"], "text"));
            if printing {
                println!("{text}");
            } else {
                std::fs::write(&output, format!("{}\n", text.trim_end()))
                    .with_context(|| format!("cannot write {}", output.display()))?;
                eprintln!("wrote {}", output.display());
            }
            eprintln!("{}", summary(&reply));
        }
        Command::Plan { goal, steps } => {
            let steps = steps
                .map(|path| {
                    let steps = read_json(&path, "steps file")?;
                    anyhow::ensure!(
                        steps.is_array(),
                        "the steps file {} must hold a JSON array of steps",
                        path.display()
                    );
                    Ok(steps)
                })
                .transpose()?;
            let body = json!({ "goal": or_stdin(goal)?, "steps": steps });
            show(&api.post(&["plans"], body).await?, &print_plan);
        }
        Command::PlanStatus { plan_id } => {
            show(&api.get(&["plans", &plan_id]).await?, &print_plan);
        }
        Command::Approve(decision) => show(&decision.send(&api, "approve").await?, &print_plan),
        Command::Reject(decision) => show(&decision.send(&api, "reject").await?, &print_plan),
    }
    Ok(())
}

/// The AI API of one server, called on behalf of one caller.
#[derive(Debug)]
struct Api {
    http: reqwest::Client,
    base: Url,
    token: Option<Secret>,
    /// `worker_name` and, if given, `container_name`: added to every request body.
    caller: Map<String, Value>,
}

impl Api {
    fn new(settings: &Settings, args: &AiArgs) -> Result<Self> {
        let url = args
            .url
            .clone()
            .unwrap_or_else(|| format!("http://{}", settings.http_addr));
        let base = Url::parse(&url)
            .ok()
            .filter(|u| u.scheme() == "http")
            .ok_or_else(|| anyhow!("invalid --url {url:?}: expected http://host:port"))?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        Ok(Self {
            http,
            base,
            token: args.token.clone(),
            caller: Map::from_iter([
                ("worker_name".to_owned(), json!(args.worker_name)),
                ("container_name".to_owned(), json!(args.container_name)),
            ]),
        })
    }

    async fn get(&self, path: &[&str]) -> Result<Value> {
        let answer = self.send(Method::GET, path, None).await?;
        answer.json().await.context("the answer is not JSON")
    }

    async fn post(&self, path: &[&str], body: Value) -> Result<Value> {
        let answer = self.send(Method::POST, path, Some(body)).await?;
        answer.json().await.context("the answer is not JSON")
    }

    /// POSTs `body` with `"stream": true`, hands each event of the answer to `on_event`, and
    /// returns the `done` event's data (what the unstreamed call answers).
    async fn stream(
        &self,
        path: &[&str],
        mut body: Value,
        on_event: impl FnMut(&str, &Value) -> Result<()>,
    ) -> Result<Value> {
        body["stream"] = json!(true);
        read_events(self.send(Method::POST, path, Some(body)).await?, on_event).await
    }

    /// Sends a request to `/api/ai/<path…>`, the body (if any) with the caller added and its
    /// null fields left out. Answers a 2xx response; anything else is an error saying why.
    async fn send(&self, method: Method, path: &[&str], body: Option<Value>) -> Result<Response> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| anyhow!("--url {} cannot take a path", self.base))?
            .pop_if_empty()
            .extend(["api", "ai"])
            .extend(path);
        let mut request = self.http.request(method, url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(&token.0);
        }
        if let Some(Value::Object(fields)) = body {
            let mut body = self.caller.clone();
            body.extend(fields);
            body.retain(|_, v| !v.is_null());
            request = request.json(&body);
        }
        let answer = request.send().await.with_context(|| {
            format!(
                "cannot reach vibehq at {}: is `vibehq up` running there? (set --url or VIBEHQ_URL)",
                self.base
            )
        })?;
        let status = answer.status();
        if status.is_success() {
            return Ok(answer);
        }
        let text = answer.text().await.unwrap_or_default();
        let reason = match serde_json::from_str::<Value>(&text) {
            Ok(error) if error["error"]["message"].is_string() => describe(&error),
            _ => text.trim().to_owned(),
        };
        let hint = match status {
            StatusCode::UNAUTHORIZED => "; pass --token or set VIBEHQ_TOKEN",
            _ => "",
        };
        bail!("{status}: {reason}{hint}")
    }
}

/// Reads a Server-Sent Events answer: blocks separated by a blank line, each with an
/// `event: <name>` and `data: <json>` lines. Hands every event to `on_event` until `done`,
/// whose data it returns, or `error`, whose message it returns as an error.
async fn read_events(
    mut answer: Response,
    mut on_event: impl FnMut(&str, &Value) -> Result<()>,
) -> Result<Value> {
    let mut pending = Vec::new();
    while let Some(chunk) = answer.chunk().await.context("the answer broke off")? {
        pending.extend(chunk.iter().filter(|&&b| b != b'\r'));
        while let Some(end) = pending.windows(2).position(|w| w == b"\n\n") {
            let block: Vec<u8> = pending.drain(..end + 2).collect();
            let Some((name, data)) = parse_event(&block)? else {
                continue;
            };
            match name.as_str() {
                "done" => return Ok(data),
                "error" => bail!("{}", describe(&data)),
                _ => on_event(&name, &data)?,
            }
        }
    }
    bail!("the answer ended before its `done` event")
}

/// One event's name and data; `None` for a block without a name (a keep-alive comment).
fn parse_event(block: &[u8]) -> Result<Option<(String, Value)>> {
    let block = std::str::from_utf8(block).context("the answer is not UTF-8")?;
    let (mut name, mut data) = (None, Vec::new());
    for line in block.lines() {
        if let Some(value) = line.strip_prefix("event:") {
            name = Some(value.trim());
        } else if let Some(value) = line.strip_prefix("data:") {
            data.push(value.strip_prefix(' ').unwrap_or(value));
        }
    }
    let Some(name) = name else {
        return Ok(None);
    };
    let data = serde_json::from_str(&data.join("\n"))
        .with_context(|| format!("the answer's `{name}` event does not carry JSON"))?;
    Ok(Some((name.to_owned(), data)))
}

/// What a streamed answer has shown so far: whether stdout is mid-line, so notes on stderr
/// start on a line of their own, and the current turn's tool calls, whose arguments arrive in
/// pieces, by index.
#[derive(Debug, Default)]
struct Screen {
    mid_line: bool,
    calls: BTreeMap<u64, (String, String)>,
}

impl Screen {
    /// Shows a piece of the answer (`{"type": "text", "text": …}`), or collects a tool call.
    fn delta(&mut self, delta: &Value) -> Result<()> {
        let index = delta["index"].as_u64().unwrap_or_default();
        match field(delta, "type") {
            "text" => self.text(field(delta, "text"))?,
            "tool_call_start" => {
                let name = field(delta, "name").to_owned();
                self.calls.insert(index, (name, String::new()));
            }
            "tool_call_arguments" => {
                if let Some((_, arguments)) = self.calls.get_mut(&index) {
                    arguments.push_str(field(delta, "json"));
                }
            }
            "restart" => self.note(&format!(
                "(the answer starts over from provider {})",
                field(delta, "provider")
            ))?,
            _ => {}
        }
        Ok(())
    }

    /// Shows a tool call (its arguments as collected) and its result; tools run in the order
    /// the model called them.
    fn tool_result(&mut self, event: &Value) -> Result<()> {
        let (_, (name, arguments)) = self.calls.pop_first().unwrap_or_default();
        let name = if name.is_empty() {
            field(event, "tool_name")
        } else {
            &name
        };
        let arguments =
            serde_json::from_str::<Value>(&arguments).map_or(arguments.clone(), |a| a.to_string());
        self.note(&format!("→ {name} {arguments}"))?;
        match event["error"].as_str() {
            Some(error) => self.note(&format!("← error: {error}")),
            None => self.note(&format!("← {}", event["result"])),
        }
    }

    fn text(&mut self, text: &str) -> Result<()> {
        let mut stdout = std::io::stdout();
        stdout.write_all(text.as_bytes())?;
        stdout.flush()?;
        if !text.is_empty() {
            self.mid_line = !text.ends_with('\n');
        }
        Ok(())
    }

    fn note(&mut self, line: &str) -> Result<()> {
        self.end_line()?;
        eprintln!("{line}");
        Ok(())
    }

    /// Ends stdout's line if text left it mid-line.
    fn end_line(&mut self) -> Result<()> {
        if std::mem::take(&mut self.mid_line) {
            self.text("\n")?;
        }
        Ok(())
    }
}

fn print_route(decision: &Value) {
    println!("tier        {}", field(decision, "tier"));
    println!(
        "model       {}/{}",
        field(decision, "provider"),
        field(decision, "model")
    );
    println!("complexity  {}", decision["complexity"]);
    let reasons: Vec<&str> = list(&decision["reasons"])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    println!("reasons     {}", reasons.join("; "));
}

fn print_evaluation(evaluation: &Value) {
    for round in list(&evaluation["rounds"]) {
        println!(
            "round {}: score {}{}",
            round["round"],
            round["score"],
            round["feedback"]
                .as_str()
                .map(|f| format!(", {f}"))
                .unwrap_or_default()
        );
    }
    let verdict = match evaluation["passed"].as_bool() {
        Some(true) => "passed",
        _ => "did not pass",
    };
    println!("{verdict}; best score {}:", evaluation["best_score"]);
    println!("{}", field(evaluation, "best_output"));
}

fn print_plan(plan: &Value) {
    println!("plan {}: {}", field(plan, "plan_id"), field(plan, "status"));
    for task in list(&plan["tasks"]) {
        println!("  {:<18} {}", field(task, "status"), field(task, "title"));
    }
    for approval in list(&plan["approvals"]) {
        let id = field(approval, "approval_id");
        let action = field(approval, "action");
        match field(approval, "status") {
            "pending" => {
                println!("approval {id} pending: {action} (vibehq ai approve|reject {id})")
            }
            decided => println!(
                "approval {id} {decided} by {}: {action}",
                field(approval, "decided_by")
            ),
        }
    }
}

/// `provider/model, N attempt(s), request <request_id>` of an `ask` answer.
fn summary(reply: &Value) -> String {
    format!(
        "{}/{}, {}, request {}",
        field(reply, "provider"),
        field(reply, "model"),
        count(reply, "attempts", "attempt"),
        field(reply, "request_id")
    )
}

/// `1 step`, `2 steps`: a count of an answer's `field`.
fn count(answer: &Value, field: &str, noun: &str) -> String {
    match answer[field].as_u64() {
        Some(1) => format!("1 {noun}"),
        Some(n) => format!("{n} {noun}s"),
        None => format!("? {noun}s"),
    }
}

/// An error body's (or `error` event's) message, and the field at fault if any.
fn describe(error: &Value) -> String {
    let error = &error["error"];
    let message = error["message"].as_str().unwrap_or("no message");
    match error["field"].as_str() {
        Some(name) => format!("{message} (field {name})"),
        None => message.to_owned(),
    }
}

/// A string field of an answer, empty if absent.
fn field<'a>(value: &'a Value, name: &str) -> &'a str {
    value[name].as_str().unwrap_or_default()
}

fn list(value: &Value) -> &[Value] {
    value.as_array().map(Vec::as_slice).unwrap_or_default()
}

/// `text`, or all of stdin if it is `-` (read before any request is made, so blocking is fine).
fn or_stdin(text: String) -> Result<String> {
    if text != "-" {
        return Ok(text);
    }
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .context("cannot read the prompt from stdin")?;
    Ok(input)
}

fn read_json(path: &Path, what: &str) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the {what} {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("the {what} {} is not JSON", path.display()))
}
