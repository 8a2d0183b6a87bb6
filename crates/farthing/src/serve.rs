//! `farthing serve`: the payment API server on the embedded store.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use farthing_server::{Config, Server};

#[derive(Args)]
pub struct ServeArgs {
    /// A TOML file of settings (docs/API.md, "Configuration"); FARTHING_* variables
    /// override it, and these flags override both.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory [default: ./farthing-data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080; port 0 picks one].
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// The risk policy file (TOML; reloaded when it changes) [default: the shipped policy].
    #[arg(long)]
    risk_policy: Option<PathBuf>,
}

pub fn run(args: &ServeArgs) -> Result<(), String> {
    let mut config = Config::load(args.config.as_deref())?;
    if let Some(d) = &args.data_dir {
        config.data_dir = d.clone();
    }
    if let Some(l) = args.listen {
        config.listen = l;
    }
    if let Some(p) = &args.risk_policy {
        config.risk_policy = Some(p.clone());
    }
    init_log(&config)?;
    let files_warning = raise_file_limit(config.connections_max);
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if config.worker_threads > 0 {
        runtime.worker_threads(config.worker_threads);
    }
    let runtime = runtime.enable_all().build().map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let mut signals = Signals::catch()?;
        let admin_key = std::env::var("FARTHING_ADMIN_KEY").ok().filter(|k| !k.is_empty());
        let server = Server::start(config.clone(), admin_key).await?;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "farthing: listening on {}", server.url);
        let _ = writeln!(out, "  data directory: {}", config.data_dir.display());
        let _ = writeln!(
            out,
            "  API: {}/v1 — guide in docs/API.md, schema at {}/openapi.json",
            server.url, server.url
        );
        match &server.state.risk {
            Some(risk) => {
                let st = risk.status();
                let _ = writeln!(
                    out,
                    "  risk engine: policy {:?} version {} ({}), model {}",
                    st.policy_name,
                    st.policy_version,
                    config.risk_policy.as_ref().map_or("built in; --risk-policy FILE to change it".to_string(), |p| format!("{}, reloaded on change", p.display())),
                    st.live_model.as_deref().unwrap_or("none (rules and policies only)")
                );
            }
            None => {
                let _ = writeln!(out, "  risk engine: off (risk = false)");
            }
        }
        if let Some(risk) = &server.state.risk {
            let codes: Vec<String> =
                server.state.directory.assets().into_iter().map(|a| a.code).collect();
            let bare = risk.assets_without_rules(&codes);
            if !bare.is_empty() {
                let _ = writeln!(
                    out,
                    "  warning: the risk policy has no caps or security tiers for {}: payments in them are judged by the model and velocity alone",
                    bare.join(", ")
                );
            }
        }
        if let Some(warning) = &files_warning {
            let _ = writeln!(out, "  warning: {warning}");
        }
        if config.webhooks_may_reach_private() {
            let _ = writeln!(
                out,
                "  webhooks may go to loopback and private addresses (set webhook_private_addresses = false behind a proxy)"
            );
        }
        if let Some(key) = &server.new_admin_key {
            let _ = writeln!(
                out,
                "  no working admin key yet: a new admin API key (shown once; keep it safe):"
            );
            let _ = writeln!(out, "    {key}");
        }
        if let (None, Some(_)) = (&server.new_admin_key, std::env::var_os("FARTHING_ADMIN_KEY")) {
            let _ = writeln!(
                out,
                "  note: FARTHING_ADMIN_KEY is read at the first start only; ignored"
            );
        }
        let _ = writeln!(out, "farthing: ready");
        let _ = out.flush();
        drop(out);
        signals.wait().await;
        say("farthing: stopping (finishing requests in flight)");
        server.shutdown().await?;
        say("farthing: stopped");
        Ok(())
    })
}

/// The server's log on standard error, as `log_format` and `log_level` (or `RUST_LOG`) say.
fn init_log(config: &Config) -> Result<(), String> {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(f) if !f.is_empty() => EnvFilter::try_new(&f).map_err(|e| format!("RUST_LOG: {e}"))?,
        _ => EnvFilter::try_new(&config.log_level).map_err(|e| format!("log_level: {e}"))?,
    };
    // Colours only for a person at a terminal, never in a file or a collector's pipe.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let log = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour);
    // A second start in one process (tests) keeps the first subscriber.
    let _ = match config.log_format.as_str() {
        "json" => log.json().try_init(),
        _ => log.try_init(),
    };
    Ok(())
}

/// Raises the open-files limit to its hard limit: each connection is a file. A warning when
/// even that leaves too little room for `connections_max` connections and the data files.
fn raise_file_limit(connections_max: usize) -> Option<String> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit write/read only the struct given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    let needed = connections_max as u64 + 256;
    (limit.rlim_cur < needed).then(|| {
        format!(
            "open files are limited to {}: connections_max = {connections_max} needs about {needed} (raise `ulimit -n`, or lower connections_max)",
            limit.rlim_cur
        )
    })
}

/// SIGTERM and SIGINT, caught from the moment this is made (before the server says it is
/// ready: a supervisor that stops it at once must still get a graceful stop).
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn catch() -> Result<Self, String> {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
        let int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
        Ok(Self { term, int })
    }

    async fn wait(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

/// Prints a line, ignoring a closed stdout (the server must stop cleanly whoever listens).
fn say(line: &str) {
    let _ = writeln!(std::io::stdout(), "{line}");
}

#[derive(Args)]
pub struct AdminKeyArgs {
    /// The server's data directory (no server may be running on it).
    #[arg(long, default_value = "./farthing-data")]
    data_dir: PathBuf,
    /// A label to list the key under.
    #[arg(long, default_value = "made offline")]
    label: String,
}

/// `farthing admin-key`: a new admin key, made offline (when every admin key was lost).
pub fn run_admin_key(args: &AdminKeyArgs) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let key = runtime.block_on(farthing_server::make_admin_key(&args.data_dir, &args.label))?;
    say("new admin API key (shown once; keep it safe):");
    say(&format!("  {key}"));
    Ok(())
}

#[derive(Args)]
pub struct RecoverArgs {
    /// The server's data directory (no server may be running on it).
    #[arg(long)]
    data_dir: PathBuf,
    /// The log (`tlog/`) was lost: move what is left of it aside and start a new log, with a
    /// new key, rebuilt from the ledger and signed anew. Receipts and checkpoints of the old
    /// log no longer verify against the new key: publish it.
    #[arg(long)]
    new_log: bool,
    /// The new log's origin (its name in checkpoints) [default: a random local name].
    #[arg(long, requires = "new_log")]
    log_origin: Option<String>,
    /// `server.redb` was lost or damaged: move it aside and start the server's records
    /// afresh (API keys, webhooks, channel and risk records), printing a new admin key.
    #[arg(long)]
    new_server_records: bool,
}

/// `farthing recover`: starts afresh, on purpose, what a data directory lost.
pub fn run_recover(args: &RecoverArgs) -> Result<(), String> {
    if !args.new_log && !args.new_server_records {
        return Err("say what to recover: --new-log, --new-server-records, or both".into());
    }
    if !args.data_dir.join("FORMAT").exists() {
        return Err(format!("{} is not a Farthing data directory", args.data_dir.display()));
    }
    if args.new_log {
        // Opening the directory takes its lock: no server may be running on it.
        let dir = farthing_store::DataDir::open(&args.data_dir).map_err(|e| e.to_string())?;
        let moved = farthing_store::tlog::start_new_log(&dir.root, args.log_origin.as_deref())
            .map_err(|e| e.to_string())?;
        drop(dir);
        match moved {
            Some(aside) => say(&format!("the old log was moved to {}", aside.display())),
            None => say("there was no log left"),
        }
        let key = farthing_store::tlog::verifier_key(&args.data_dir).map_err(|e| e.to_string())?;
        say("a new log was started; it is rebuilt from the ledger and signed at the next start.");
        say(&format!("its verifier key (publish it): {key}"));
    }
    if args.new_server_records {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let key = runtime.block_on(farthing_server::start_new_server_records(&args.data_dir))?;
        say("the server's records were started afresh; the old file, if any, was moved aside.");
        say("new admin API key (shown once; keep it safe):");
        say(&format!("  {key}"));
    }
    Ok(())
}
