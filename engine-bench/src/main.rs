//! Engine benchmark and crash-test worker. Prints its figures; not a test.
//!
//! ```text
//! engine-bench fsync     [--db FILE]                   4 KiB write+fsync probe (median)
//! engine-bench burst     [--n 10000] [--steps 5] [--sync full|normal] [--db FILE] [--journal true|false]
//! engine-bench open-loop [--rate 100] [--seconds 10] [--steps 3] [--sync full|normal] [--journal true|false]
//! engine-bench signals   [--n 10000] [--entities 1] [--sync full|normal]
//! engine-bench entity-query [--entities 100000]           query by name and key prefix (median)
//! engine-bench transfers [--n 1000] [--accounts 10] [--sync full|normal]   transfers under locks
//! engine-bench primitives [--n 1000000]                  limiter decision and breaker record (ns)
//! engine-bench resilience-overhead [--n 5000] [--steps 5] [--rounds 3]   hello-5 with vs without a limiter and breaker
//! engine-bench shared-limiter --database-url URL [--processes 2] [--seconds 30] [--rate 500]   one budget, several processes
//! engine-bench worker    --db FILE [--n 1000] [--steps 5] [--delay-ms 0] [--poison turn|activity]
//! ```
//!
//! `signals` sends N `add 1` signals to a set of counter entities at once and times them from
//! the first signal to the last committed batch; the gate is every counter's exact total.
//! `resilience-overhead` runs the hello-N burst twice per round, alternating: plain, and with
//! every activity behind a limiter (with headroom) and a circuit breaker; it prints each median
//! and their ratio. `shared-limiter` spawns PROCESSES copies of itself that hammer one shared
//! GCRA limiter on the database for SECONDS, and checks that together they stay within 5 % of
//! the configured rate with at most one store write per 50 admissions.
//! `transfers` starts N sample transfers at once among ACCOUNTS accounts, each locking its two
//! accounts, and times them from the first start to the last completion; the gates are every
//! transfer Completed, the total conserved and no account left locked.
//!
//! Throughput comes from stored timestamps (completed / (last completion − first creation));
//! open-loop latency is completion time minus the client's start time. Every run checks its
//! correctness gates: no failures, the exact history length, one completion per instance.
//! `worker` starts any of `crash-0 … crash-(n−1)` that do not exist yet and waits for all of them:
//! the crash test kills it with SIGKILL and runs it again on the same file. With `--poison turn`
//! it also starts `poison`, an orchestration whose turn aborts the process, halfway through its
//! starts (`--poison activity`: an orchestration calling an activity that aborts it), and keeps a
//! turn journal beside the database: the crash-loop tests run it until the engine quarantines
//! the culprit and everything else completes.

use std::{
    collections::BTreeMap,
    io::Write,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use engine::{
    Activity, ActivityContext, Client, ClientError, Database, DatabaseUrl, Failure, Orchestration,
    OrchestrationContext, Registry, Runtime, RuntimeOptions, RuntimeStatus, SqliteStore,
    StartOptions,
    db::{ConnectOptions, Durability},
    entity::EntityKey,
    samples::Counter,
    store::{InstanceQuery, StoreAdmin},
};

static DELAY_MS: AtomicU64 = AtomicU64::new(0);

struct Work;
impl Activity for Work {
    const NAME: &'static str = "Work";
    type Input = u32;
    type Output = u32;
    async fn run(&self, _: ActivityContext, i: u32) -> Result<u32, Failure> {
        let delay = DELAY_MS.load(Ordering::Relaxed);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        Ok(i + 1)
    }
}

/// hello-N: N sequential activity calls.
struct Hello;
impl Orchestration for Hello {
    const NAME: &'static str = "Hello";
    type Input = u32;
    type Output = u32;
    async fn run(ctx: OrchestrationContext, steps: u32) -> Result<u32, Failure> {
        let mut x = 0;
        for _ in 0..steps {
            x = ctx.call_activity::<Work>(&x).await?;
        }
        Ok(x)
    }
}

/// [`Work`] behind the `bench` limiter and breaker.
struct GuardedWork;
impl Activity for GuardedWork {
    const NAME: &'static str = "GuardedWork";
    type Input = u32;
    type Output = u32;
    const OPTIONS: engine::ActivityOptions = engine::ActivityOptions {
        limiter: Some("bench"),
        breaker: Some("bench"),
        concurrency: None,
    };
    async fn run(&self, _: ActivityContext, i: u32) -> Result<u32, Failure> {
        Ok(i + 1)
    }
}

/// hello-N through [`GuardedWork`].
struct GuardedHello;
impl Orchestration for GuardedHello {
    const NAME: &'static str = "GuardedHello";
    type Input = u32;
    type Output = u32;
    async fn run(ctx: OrchestrationContext, steps: u32) -> Result<u32, Failure> {
        let mut x = 0;
        for _ in 0..steps {
            x = ctx.call_activity::<GuardedWork>(&x).await?;
        }
        Ok(x)
    }
}

/// Aborts the whole process in its first turn: what a turn that runs out of memory does.
struct Poison;
impl Orchestration for Poison {
    const NAME: &'static str = "Poison";
    type Input = ();
    type Output = ();
    async fn run(_: OrchestrationContext, (): ()) -> Result<(), Failure> {
        eprintln!("poison: aborting the process");
        std::process::abort()
    }
}

/// Aborts the whole process, from an activity.
struct AbortActivity;
impl Activity for AbortActivity {
    const NAME: &'static str = "AbortActivity";
    type Input = ();
    type Output = ();
    async fn run(&self, _: ActivityContext, (): ()) -> Result<(), Failure> {
        eprintln!("poison: aborting the process");
        std::process::abort()
    }
}

/// Calls [`AbortActivity`].
struct PoisonActivity;
impl Orchestration for PoisonActivity {
    const NAME: &'static str = "PoisonActivity";
    type Input = ();
    type Output = ();
    async fn run(ctx: OrchestrationContext, (): ()) -> Result<(), Failure> {
        ctx.call_activity::<AbortActivity>(&()).await
    }
}

/// Engine benchmark and crash-test worker: prints figures, checks correctness gates.
#[derive(Debug, Parser)]
#[command(name = "engine-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// 4 KiB write+fsync probe (median of 200).
    Fsync {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Starts N hello-STEPS at once; throughput from stored timestamps.
    Burst {
        #[arg(long, default_value_t = 10_000)]
        n: usize,
        #[arg(long, default_value_t = 5)]
        steps: u32,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Starts hello-STEPS at a fixed rate; latency percentiles and CPU.
    OpenLoop {
        #[arg(long, default_value_t = 100.0)]
        rate: f64,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        #[arg(long, default_value_t = 3)]
        steps: u32,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Sends N signals to ENTITIES counters at once; operations per second until all committed.
    Signals {
        #[arg(long, default_value_t = 10_000)]
        n: usize,
        #[arg(long, default_value_t = 1)]
        entities: usize,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Creates ENTITIES counters, then times a query by name and key prefix (median of 21).
    EntityQuery {
        #[arg(long, default_value_t = 100_000)]
        entities: usize,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Starts N transfers under locks among ACCOUNTS accounts at once; transfers per second.
    Transfers {
        #[arg(long, default_value_t = 1_000)]
        n: usize,
        #[arg(long, default_value_t = 10)]
        accounts: u64,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Times the resilience primitives' decisions, single-threaded (median ns of 7 runs).
    Primitives {
        #[arg(long, default_value_t = 1_000_000)]
        n: usize,
    },
    /// hello-STEPS bursts with and without a limiter and breaker on every activity, alternated.
    ResilienceOverhead {
        #[arg(long, default_value_t = 5_000)]
        n: usize,
        #[arg(long, default_value_t = 5)]
        steps: u32,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Several processes share one GCRA limiter on the database; checks the combined rate.
    SharedLimiter {
        #[arg(long)]
        database_url: String,
        #[arg(long, default_value_t = 2)]
        processes: usize,
        #[arg(long, default_value_t = 30.0)]
        seconds: f64,
        /// Admissions per second, for all processes together.
        #[arg(long, default_value_t = 500)]
        rate: u32,
        #[arg(long, default_value_t = 100)]
        burst: u32,
        /// Cells leased per store write (the last chunk each process leases is partly unspent
        /// when the run stops, so a chunk of 60 keeps writes under one per 50 admissions).
        #[arg(long, default_value_t = 60)]
        chunk: u32,
        /// Run as one of the processes (internal): start at this Unix time in ms, print JSON.
        #[arg(long, hide = true)]
        child_start_ms: Option<i64>,
        /// The limiter's name (internal: the parent picks a fresh one).
        #[arg(long, hide = true)]
        name: Option<String>,
    },
    /// Crash-test worker: starts the crash-* instances not yet started and waits for all.
    Worker {
        #[arg(long)]
        db: PathBuf,
        #[arg(long, default_value_t = 1000)]
        n: usize,
        #[arg(long, default_value_t = 5)]
        steps: u32,
        /// Delay inside each activity, so a kill lands mid-run.
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
        /// Also start an orchestration whose turn (or activity) aborts the process.
        #[arg(long, value_enum)]
        poison: Option<PoisonKind>,
    },
}

/// Where and how the benchmark stores its instances.
#[derive(Debug, clap::Args)]
struct StoreArgs {
    /// `full` fsyncs every commit (power-loss durable); `normal` only at checkpoints.
    #[arg(long, value_enum, default_value_t = Sync::Full)]
    sync: Sync,
    /// Database file (default: a fresh one in a temporary directory under $BENCH_DIR or `.`).
    #[arg(long)]
    db: Option<PathBuf>,
    /// Keep a turn journal beside the database, as the server does.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    journal: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Sync {
    Full,
    Normal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PoisonKind {
    Turn,
    Activity,
}

/// Runs the command; a failure is one line on stderr and exit code 1.
fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("engine-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    match command {
        Command::Fsync { store } => fsync_probe(&store),
        Command::Burst { n, steps, store } => rt.block_on(burst(n, steps, &store)),
        Command::Signals { n, entities, store } => rt.block_on(signals(n, entities, &store)),
        Command::EntityQuery { entities, store } => rt.block_on(entity_query(entities, &store)),
        Command::Transfers { n, accounts, store } => rt.block_on(transfers(n, accounts, &store)),
        Command::Primitives { n } => primitives(n),
        Command::ResilienceOverhead {
            n,
            steps,
            rounds,
            store,
        } => rt.block_on(resilience_overhead(n, steps, rounds, &store)),
        Command::SharedLimiter {
            database_url,
            processes,
            seconds,
            rate,
            burst,
            chunk,
            child_start_ms,
            name,
        } => {
            let limit = SharedLimit {
                rate,
                burst,
                chunk,
                seconds,
            };
            match (child_start_ms, name) {
                (Some(start), Some(name)) => {
                    rt.block_on(shared_limiter_child(&database_url, &name, limit, start))
                }
                _ => shared_limiter(&database_url, processes, limit),
            }
        }
        Command::OpenLoop {
            rate,
            seconds,
            steps,
            store,
        } => rt.block_on(open_loop(rate, seconds, steps, &store)),
        Command::Worker {
            db,
            n,
            steps,
            delay_ms,
            poison,
        } => {
            DELAY_MS.store(delay_ms, Ordering::Relaxed);
            rt.block_on(worker(&db, n, steps, poison))
        }
    }
}

/// Runtime options as the server uses them: with a turn journal beside the database, unless
/// `--journal false`.
fn options(args: &StoreArgs, db: &std::path::Path) -> RuntimeOptions {
    let mut options = RuntimeOptions::default();
    if args.journal {
        options.turn_journal = Some(engine::journal::beside(db));
    }
    options
}

fn registry() -> Registry {
    use engine::resilience::{breaker::BreakerConfig, config::LimiterConfig};
    let mut r = Registry::new();
    r.orchestration::<Hello>()
        .orchestration::<GuardedHello>()
        .orchestration::<Poison>()
        .orchestration::<PoisonActivity>()
        .activity(Work)
        .activity(GuardedWork)
        .activity(AbortActivity)
        // Headroom: the limiter never makes a hello-5 burst wait.
        .limiter(
            "bench",
            LimiterConfig::gcra(10_000_000, Duration::from_secs(1), 100_000),
        )
        .breaker("bench", BreakerConfig::default());
    r
}

async fn open_store(path: &std::path::Path, durability: Durability) -> Result<SqliteStore> {
    let url: DatabaseUrl = format!("sqlite://{}", path.display()).parse()?;
    let db = Database::connect(
        &url,
        &ConnectOptions {
            durability,
            ..ConnectOptions::default()
        },
    )
    .await?;
    db.migrate().await?;
    let Database::Sqlite(pool) = db else {
        bail!("not sqlite")
    };
    Ok(SqliteStore::new(pool).await?)
}

fn durability(args: &StoreArgs) -> Durability {
    match args.sync {
        Sync::Full => Durability::Full,
        Sync::Normal => Durability::Normal,
    }
}

/// The samples' runtime on a fresh database (the guard removes a temporary one when dropped).
async fn samples_runtime(
    args: &StoreArgs,
    label: &str,
) -> Result<(Runtime<SqliteStore>, SqliteStore, Option<tempfile::TempDir>)> {
    let (path, dir) = fresh_db(args, label)?;
    let store = open_store(&path, durability(args)).await?;
    let rt = Runtime::start(
        store.clone(),
        engine::samples::registry(),
        options(args, &path),
    );
    Ok((rt, store, dir))
}

fn fresh_db(args: &StoreArgs, label: &str) -> Result<(PathBuf, Option<tempfile::TempDir>)> {
    if let Some(path) = &args.db {
        return Ok((path.clone(), None));
    }
    let dir = tempfile::Builder::new()
        .prefix(&format!("engine-bench-{label}-"))
        .tempdir_in(std::env::var("BENCH_DIR").unwrap_or_else(|_| ".".into()))?;
    Ok((dir.path().join("bench.db"), Some(dir)))
}

/// (CPU seconds, max RSS in MiB) of this process, from /proc.
fn resources() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let cpu = (ticks(11) + ticks(12)) / 100.0;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    (cpu, rss_kib / 1024.0)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn fsync_probe(args: &StoreArgs) -> Result<()> {
    let (path, _dir) = fresh_db(args, "fsync")?;
    let mut file = std::fs::File::create(path.with_extension("probe"))?;
    let block = [7u8; 4096];
    let mut samples = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        file.write_all(&block)?;
        file.sync_all()?;
        samples.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    samples.sort_by(f64::total_cmp);
    println!(
        "fsync probe: 4 KiB write+fsync median {:.3} ms, p90 {:.3} ms (200 samples; load {})",
        samples[100],
        samples[180],
        load_average()
    );
    Ok(())
}

/// Checks the correctness gates over every instance and returns their records.
async fn verify(
    store: &SqliteStore,
    client: &Client<SqliteStore>,
    expected: usize,
    steps: u32,
) -> Result<Vec<engine::store::InstanceRecord>> {
    let mut records = Vec::with_capacity(expected);
    let mut query = InstanceQuery {
        page_size: 1000,
        ..InstanceQuery::default()
    };
    loop {
        let page = client.query(&query).await?;
        records.extend(page.instances);
        match page.next_cursor {
            Some(c) => query.cursor = Some(c),
            None => break,
        }
    }
    let failed = records
        .iter()
        .filter(|r| r.status != RuntimeStatus::Completed)
        .count();
    let wrong_len = records
        .iter()
        .filter(|r| r.history_len != 4 + 4 * steps)
        .count();
    let counts = store.status_counts().await?;
    println!(
        "gates: {} instances, {} not Completed, {} with a history length other than {}, counts {:?}",
        records.len(),
        failed,
        wrong_len,
        4 + 4 * steps,
        counts
            .iter()
            .filter(|(_, c)| **c > 0)
            .collect::<BTreeMap<_, _>>()
    );
    if records.len() != expected || failed > 0 || wrong_len > 0 {
        bail!("correctness gate failed");
    }
    Ok(records)
}

async fn burst(n: usize, steps: u32, args: &StoreArgs) -> Result<()> {
    burst_run(n, steps, args, false).await.map(|_| ())
}

/// hello-STEPS bursts, alternating plain and guarded runs; medians and their ratio.
async fn resilience_overhead(n: usize, steps: u32, rounds: usize, args: &StoreArgs) -> Result<()> {
    anyhow::ensure!(
        args.db.is_none(),
        "each run needs a fresh database: omit --db"
    );
    let (mut plain, mut guarded) = (Vec::new(), Vec::new());
    for round in 0..rounds.max(1) {
        // Alternate which goes first, so drift in the machine's state hits both alike.
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for with in order {
            let rate = burst_run(n, steps, args, with).await?;
            if with {
                guarded.push(rate);
            } else {
                plain.push(rate);
            }
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (p, g) = (median(&mut plain), median(&mut guarded));
    println!(
        "resilience overhead, hello-{steps} N={n}, median of {}: plain {p:.0} orchestrations/s, \
         every activity behind a limiter and a breaker {g:.0} orchestrations/s: {:.1} % of plain \
         (runs: plain {plain:.0?}, guarded {guarded:.0?}); load {}",
        plain.len(),
        100.0 * g / p,
        load_average()
    );
    Ok(())
}

/// One hello-STEPS burst; returns orchestrations per second from stored timestamps.
async fn burst_run(n: usize, steps: u32, args: &StoreArgs, guarded: bool) -> Result<f64> {
    let (path, _dir) = fresh_db(args, "burst")?;
    let store = open_store(&path, durability(args)).await?;
    let rt = Runtime::start(store.clone(), registry(), options(args, &path));
    let client = rt.client();
    let (cpu0, _) = resources();
    let wall = Instant::now();
    let mut starts = tokio::task::JoinSet::new();
    let ids: Vec<String> = (0..n).map(|i| format!("burst-{i:06}")).collect();
    for chunk in ids.chunks(n.div_ceil(64).max(1)) {
        let client = client.clone();
        let chunk = chunk.to_vec();
        starts.spawn(async move {
            for id in chunk {
                let options = StartOptions {
                    instance_id: Some(id),
                    ..StartOptions::default()
                };
                if guarded {
                    client.start::<GuardedHello>(&steps, options).await?;
                } else {
                    client.start::<Hello>(&steps, options).await?;
                }
            }
            Ok::<_, ClientError>(())
        });
    }
    while let Some(r) = starts.join_next().await {
        r??;
    }
    for id in &ids {
        client
            .wait_for_completion(id, Duration::from_secs(600))
            .await?;
    }
    let elapsed = wall.elapsed().as_secs_f64();
    let (cpu1, rss) = resources();
    let stats = rt.stats();
    println!(
        "runtime: {} commits ({:.2} ms each), {} ops ({:.1} ops/commit), {} turns, {} activities, {} dispatcher rounds",
        stats.commits,
        stats.commit_micros as f64 / 1000.0 / stats.commits.max(1) as f64,
        stats.ops,
        stats.ops as f64 / stats.commits.max(1) as f64,
        stats.turns,
        stats.activities,
        stats.dispatcher_rounds
    );
    let records = verify(&store, &client, n, steps).await?;
    let first = records.iter().map(|r| r.created_at).min().unwrap_or(0);
    let last = records
        .iter()
        .filter_map(|r| r.completed_at)
        .max()
        .unwrap_or(0);
    let span = ((last - first) as f64 / 1000.0).max(0.001);
    if guarded {
        let breaker = client
            .resilience()
            .breakers
            .into_iter()
            .find(|b| b.name == "bench")
            .ok_or_else(|| anyhow::anyhow!("no bench breaker"))?;
        let limiter = client
            .resilience()
            .limiters
            .into_iter()
            .find(|l| l.name == "bench")
            .ok_or_else(|| anyhow::anyhow!("no bench limiter"))?;
        anyhow::ensure!(
            breaker.succeeded == (n as u64) * u64::from(steps) && limiter.refused == 0,
            "every guarded call went through the breaker and the limiter: {breaker:?} {limiter:?}"
        );
    }
    println!(
        "burst hello-{steps} N={n} sync={}{}: {:.0} orchestrations/s from stored timestamps \
         ({:.2} s span; wall {:.2} s), CPU {:.1} s, max RSS {:.0} MiB, load {}",
        args.sync
            .to_possible_value()
            .map(|v| v.get_name().to_owned())
            .unwrap_or_default(),
        if guarded { " (limiter + breaker)" } else { "" },
        n as f64 / span,
        span,
        elapsed,
        cpu1 - cpu0,
        rss,
        load_average()
    );
    rt.shutdown().await;
    Ok(n as f64 / span)
}

/// Clients signalling at once in `signals`, each waiting for its signal's commit.
const SIGNAL_SENDERS: usize = 500;

/// Sends `n` signals `add 1`, round-robin over `keys`, from [`SIGNAL_SENDERS`] clients at once
/// (as many as a busy server has requests in flight), each waiting for its signal's commit.
async fn add_one(
    client: &Client<SqliteStore>,
    keys: &[EntityKey<Counter>],
    n: usize,
) -> Result<()> {
    let mut senders = tokio::task::JoinSet::new();
    let per_sender = n.div_ceil(SIGNAL_SENDERS).max(1);
    for first in (0..n).step_by(per_sender) {
        let (client, keys) = (client.clone(), keys.to_vec());
        senders.spawn(async move {
            for i in first..(first + per_sender).min(n) {
                client
                    .signal_entity(Counter::add(&keys[i % keys.len()], 1), None)
                    .await?;
            }
            Ok::<_, ClientError>(())
        });
    }
    while let Some(r) = senders.join_next().await {
        r??;
    }
    Ok(())
}

async fn signals(n: usize, entities: usize, args: &StoreArgs) -> Result<()> {
    let entities = entities.max(1);
    let (rt, _store, _dir) = samples_runtime(args, "signals").await?;
    let client = rt.client();
    let keys: Vec<EntityKey<Counter>> = (0..entities)
        .map(|i| EntityKey::new(&format!("c{i:05}")))
        .collect::<Result<_, _>>()
        .map_err(anyhow::Error::msg)?;
    let (cpu0, _) = resources();
    let wall = Instant::now();
    add_one(&client, &keys, n).await?;
    let sent = wall.elapsed().as_secs_f64();
    // Committed when every counter holds its exact share (the gate).
    let expected = |i: usize| (n / entities + usize::from(i < n % entities)) as i64;
    let deadline = Instant::now() + Duration::from_secs(600);
    for (i, key) in keys.iter().enumerate() {
        loop {
            let value = client.entity_state(key).await?.map_or(0, |c| c.value);
            if value == expected(i) {
                break;
            }
            anyhow::ensure!(
                value < expected(i) && Instant::now() < deadline,
                "{}: {value}, expected {}",
                key.id(),
                expected(i)
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let elapsed = wall.elapsed().as_secs_f64();
    let (cpu1, rss) = resources();
    let stats = rt.stats();
    println!(
        "runtime: {} commits, {} entity batches ({:.1} operations each)",
        stats.commits,
        stats.entity_batches,
        stats.entity_operations as f64 / stats.entity_batches.max(1) as f64
    );
    println!(
        "signals N={n} to {entities} counter(s): {:.0} operations/s ({:.2} s to all committed; \
         sent in {sent:.2} s), gates: every counter exact; CPU {:.1} s, max RSS {:.0} MiB, load {}",
        n as f64 / elapsed,
        elapsed,
        cpu1 - cpu0,
        rss,
        load_average()
    );
    rt.shutdown().await;
    Ok(())
}

async fn entity_query(entities: usize, args: &StoreArgs) -> Result<()> {
    let (rt, store, _dir) = samples_runtime(args, "entity-query").await?;
    let client = rt.client();
    let keys: Vec<EntityKey<Counter>> = (0..entities)
        .map(|i| EntityKey::new(&format!("k{i:06}")))
        .collect::<Result<_, _>>()
        .map_err(anyhow::Error::msg)?;
    add_one(&client, &keys, entities).await?;
    let last = &keys[entities - 1];
    let deadline = Instant::now() + Duration::from_secs(600);
    while client.entity_state(last).await?.is_none() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the entities were not all created"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Keys k012340…k012349: a prefix matching 10 of the 100,000.
    let query = engine::store::EntityQuery {
        name: Some("counter".into()),
        key_prefix: Some("k01234".into()),
        page_size: 100,
        ..Default::default()
    };
    let mut times = Vec::new();
    let mut found = 0;
    for _ in 0..21 {
        let started = Instant::now();
        let page = store.query_entities(&query).await?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        found = page.entities.len();
    }
    times.sort_by(f64::total_cmp);
    let all = engine::store::EntityQuery {
        name: Some("counter".into()),
        page_size: 100,
        ..Default::default()
    };
    let started = Instant::now();
    let first_page = store.query_entities(&all).await?;
    let first_ms = started.elapsed().as_secs_f64() * 1000.0;
    anyhow::ensure!(
        found == 10 && first_page.entities.len() == 100,
        "wrong matches: {found}"
    );
    // What the Entities page asks: the first page by name, with every match counted.
    let counted = engine::store::EntityQuery { count: true, ..all };
    let mut counted_times = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let page = store.query_entities(&counted).await?;
        counted_times.push(started.elapsed().as_secs_f64() * 1000.0);
        let expected = (entities as u64).min(engine::store::ENTITY_COUNT_CAP + 1);
        anyhow::ensure!(page.total == Some(expected), "wrong count {:?}", page.total);
    }
    counted_times.sort_by(f64::total_cmp);
    println!(
        "entity query over {entities} entities: name + key prefix (10 matches) median {:.2} ms, \
         max {:.2} ms (21 runs); first page of 100 by name {first_ms:.2} ms, counting the \
         matches (up to 10,000) median {:.2} ms (5 runs); load {}",
        times[times.len() / 2],
        times[times.len() - 1],
        counted_times[counted_times.len() / 2],
        load_average()
    );
    rt.shutdown().await;
    Ok(())
}

/// Nanoseconds per call of `f` over `n` calls: the median of 7 runs.
fn median_ns(n: usize, mut f: impl FnMut(u64)) -> f64 {
    let mut runs: Vec<f64> = (0..7)
        .map(|_| {
            let started = Instant::now();
            for i in 0..n as u64 {
                f(i);
            }
            started.elapsed().as_nanos() as f64 / n as f64
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[3]
}

fn primitives(n: usize) -> Result<()> {
    use engine::resilience::{
        breaker::{BreakerConfig, CircuitBreaker, Outcome},
        bucket::LeakyBucket,
        gcra::{Decision, Gcra},
    };
    let n = n.max(1);
    // A limiter with headroom: 1,000,000 per second, time moving 2 µs per decision.
    let gcra = Gcra::new(1_000_000, Duration::from_secs(1), 100)?;
    let mut tat = 0;
    let mut admitted = 0u64;
    let gcra_ns = median_ns(n, |i| {
        let now = std::hint::black_box(i * 2_000);
        if let Decision::Allowed { .. } = gcra.check(&mut tat, now, 1) {
            admitted += 1;
        }
    });
    let mut bucket = LeakyBucket::new(1_000_000.0, Duration::from_secs(1))?;
    let bucket_ns = median_ns(n, |i| {
        std::hint::black_box(bucket.try_acquire(i * 2_000, 1.0));
    });
    let mut breaker = CircuitBreaker::new(BreakerConfig::default());
    let breaker_ns = median_ns(n, |i| {
        if let Ok(permit) = breaker.try_acquire(i * 2_000) {
            let outcome = if i % 10 == 0 {
                Outcome::Failure
            } else {
                Outcome::Success
            };
            breaker.record(permit, i * 2_000, outcome, 1_000);
        }
    });
    anyhow::ensure!(admitted > 0, "the limiter admitted nothing");
    println!(
        "primitives, single-threaded, median of 7 runs of {n}: GCRA decision {gcra_ns:.1} ns, \
         leaky-bucket acquire {bucket_ns:.1} ns, breaker acquire + record {breaker_ns:.1} ns \
         (10% failures, count window of 100; state {}); load {}",
        breaker.state().label(),
        load_average()
    );
    runtime_primitives(n)
}

/// The runtime's live limiter and breaker, as an activity call meets them: the limiter's
/// `acquire` (admitted at once, never waiting: its future completes on the first poll) and the
/// breaker's permit and record, both on the system clock, with their locks and counters.
fn runtime_primitives(n: usize) -> Result<()> {
    use engine::{
        SystemClock,
        resilience::{breaker::BreakerConfig, breaker::Outcome, config::LimiterConfig},
        runtime::resilience::{Breaker, Limiter},
    };
    use std::{
        future::Future,
        task::{Context, Poll, Waker},
    };
    let clock: Arc<dyn engine::Clock> = Arc::new(SystemClock);
    let limiter = Limiter::new(
        "bench",
        LimiterConfig::gcra(1_000_000_000, Duration::from_secs(1), 1_000_000),
        clock.clone(),
        None,
    )?;
    let mut cx = Context::from_waker(Waker::noop());
    let mut pending = 0u64;
    let limiter_ns = median_ns(n, |_| {
        let mut call = std::pin::pin!(limiter.acquire());
        match call.as_mut().poll(&mut cx) {
            Poll::Ready(Ok(())) => {}
            _ => pending += 1,
        }
    });
    let breaker = Arc::new(Breaker::new("bench", BreakerConfig::default(), clock));
    let breaker_ns = median_ns(n, |i| {
        if let Ok(call) = breaker.try_call() {
            call.finish(if i % 10 == 0 {
                Outcome::Failure
            } else {
                Outcome::Success
            });
        }
    });
    anyhow::ensure!(pending == 0, "{pending} limiter calls did not pass at once");
    // The two halves apart: a batch of permits taken, then their outcomes recorded (a closed
    // breaker gives permits without bound), each timed over the batch, median of 7 batches.
    let (mut permit_runs, mut record_runs) = (Vec::new(), Vec::new());
    for _ in 0..7 {
        let started = Instant::now();
        let calls: Vec<_> = (0..n).filter_map(|_| breaker.try_call().ok()).collect();
        permit_runs.push(started.elapsed().as_nanos() as f64 / n as f64);
        anyhow::ensure!(calls.len() == n, "the closed breaker refused a permit");
        let started = Instant::now();
        for (i, call) in calls.into_iter().enumerate() {
            call.finish(if i % 10 == 0 {
                Outcome::Failure
            } else {
                Outcome::Success
            });
        }
        record_runs.push(started.elapsed().as_nanos() as f64 / n as f64);
    }
    let median = |mut runs: Vec<f64>| {
        runs.sort_by(f64::total_cmp);
        runs[3]
    };
    let (permit_ns, record_ns) = (median(permit_runs), median(record_runs));
    println!(
        "runtime primitives (lock, clock read, counters), single-threaded, median of 7 runs of \
         {n}: limiter acquire {limiter_ns:.1} ns, breaker permit + record {breaker_ns:.1} ns \
         (apart: permit {permit_ns:.1} ns, record {record_ns:.1} ns); load {}",
        load_average()
    );
    Ok(())
}

/// A shared limiter's figures for [`shared_limiter`].
#[derive(Debug, Clone, Copy)]
struct SharedLimit {
    rate: u32,
    burst: u32,
    chunk: u32,
    seconds: f64,
}

/// Spawns `processes` children that share one limiter and checks what they admitted together.
fn shared_limiter(database_url: &str, processes: usize, limit: SharedLimit) -> Result<()> {
    let name = format!("shared-bench-{}", std::process::id());
    // Everyone starts together, a little after the children are up.
    let start_ms = engine::Clock::now_ms(&engine::SystemClock) + 1_500;
    let children: Vec<_> = (0..processes.max(1))
        .map(|_| {
            std::process::Command::new(std::env::current_exe()?)
                .args(["shared-limiter", "--database-url", database_url])
                .args(["--rate", &limit.rate.to_string()])
                .args(["--burst", &limit.burst.to_string()])
                .args(["--chunk", &limit.chunk.to_string()])
                .args(["--seconds", &limit.seconds.to_string()])
                .args(["--child-start-ms", &start_ms.to_string()])
                .args(["--name", &name])
                .stdout(std::process::Stdio::piped())
                .spawn()
        })
        .collect::<std::io::Result<_>>()?;
    let mut per_process = Vec::new();
    for child in children {
        let out = child.wait_with_output()?;
        anyhow::ensure!(out.status.success(), "a child failed: {}", out.status);
        let line = String::from_utf8_lossy(&out.stdout);
        let v: serde_json::Value = serde_json::from_str(line.trim())?;
        per_process.push((
            v["admitted"].as_u64().unwrap_or(0),
            v["writes"].as_u64().unwrap_or(0),
        ));
    }
    let admitted: u64 = per_process.iter().map(|p| p.0).sum();
    let writes: u64 = per_process.iter().map(|p| p.1).sum();
    let expected = f64::from(limit.rate) * limit.seconds;
    let deviation = 100.0 * (admitted as f64 - expected) / expected;
    println!(
        "shared limiter, {} processes on one database, {} per second (burst {}, chunks of {}) for \
         {} s: {admitted} admitted together ({:.1} per second; {deviation:+.2} % from the \
         configured rate), per process {:?}; {writes} store writes: one per {:.1} admissions; \
         load {}",
        per_process.len(),
        limit.rate,
        limit.burst,
        limit.chunk,
        limit.seconds,
        admitted as f64 / limit.seconds,
        per_process.iter().map(|p| p.0).collect::<Vec<_>>(),
        admitted as f64 / writes.max(1) as f64,
        load_average()
    );
    anyhow::ensure!(
        deviation.abs() <= 5.0,
        "together the processes admitted {deviation:+.2} % off the configured rate"
    );
    anyhow::ensure!(
        writes * 50 <= admitted,
        "{writes} store writes for {admitted} admissions: more than one per 50"
    );
    anyhow::ensure!(
        per_process.iter().all(|p| p.0 > 0),
        "a process got no budget: {per_process:?}"
    );
    Ok(())
}

/// One process of [`shared_limiter`]: 16 tasks ask for cells as fast as they are admitted from
/// `start_ms` for the run's length; prints `{"admitted", "writes"}`.
async fn shared_limiter_child(
    database_url: &str,
    name: &str,
    limit: SharedLimit,
    start_ms: i64,
) -> Result<()> {
    use engine::{
        Clock, SystemClock, resilience::config::LimiterConfig, runtime::resilience::Limiter,
        store::postgres::PgResilience,
    };
    let url: DatabaseUrl = database_url.parse()?;
    let db = Database::connect(&url, &ConnectOptions::default()).await?;
    db.migrate().await?;
    let Database::Postgres(pool) = db else {
        bail!("the shared limiter benchmark runs on PostgreSQL: several processes, one database")
    };
    let store: Arc<dyn engine::store::ResilienceStore> = Arc::new(PgResilience::new(pool));
    let config = LimiterConfig::gcra(limit.rate, Duration::from_secs(1), limit.burst)
        .shared(limit.chunk)
        .max_wait(Duration::from_secs(1));
    let limiter = Arc::new(Limiter::new(
        name,
        config,
        Arc::new(SystemClock),
        Some(store),
    )?);
    let wait = (start_ms - SystemClock.now_ms()).max(0) as u64;
    tokio::time::sleep(Duration::from_millis(wait)).await;
    let end = Instant::now() + Duration::from_secs_f64(limit.seconds);
    let admitted = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (limiter, admitted) = (limiter.clone(), admitted.clone());
        tasks.spawn(async move {
            while Instant::now() < end {
                if limiter.acquire().await.is_ok() && Instant::now() < end {
                    admitted.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    println!(
        "{}",
        serde_json::json!({
            "admitted": admitted.load(Ordering::Relaxed),
            "writes": limiter.view().store_writes,
        })
    );
    Ok(())
}

async fn transfers(n: usize, accounts: u64, args: &StoreArgs) -> Result<()> {
    use engine::samples::{Account, Transfer, TransferOutcome};
    const OPENING: u64 = 1_000_000;
    anyhow::ensure!(accounts >= 2, "a transfer needs two accounts");
    let (rt, _store, _dir) = samples_runtime(args, "transfers").await?;
    let client = rt.client();
    let key = |i: u64| EntityKey::<Account>::new(&format!("a{i:03}")).map_err(anyhow::Error::msg);
    for i in 0..accounts {
        client
            .signal_entity(Account::deposit(&key(i)?, OPENING), None)
            .await?;
    }
    let name = |i: u64| format!("a{i:03}");
    let requests = engine::samples::transfer_workload(n, accounts, name, 100, 0x2545_F491);
    let (cpu0, _) = resources();
    let wall = Instant::now();
    let mut starters = tokio::task::JoinSet::new();
    for (i, request) in requests.into_iter().enumerate() {
        let client = client.clone();
        starters.spawn(async move {
            let options = engine::StartOptions {
                instance_id: Some(format!("transfer-{i:05}")),
                ..Default::default()
            };
            client.start::<Transfer>(&request, options).await
        });
    }
    while let Some(r) = starters.join_next().await {
        r??;
    }
    let mut moved = 0;
    for i in 0..n {
        let done = client
            .wait_for_completion(&format!("transfer-{i:05}"), Duration::from_secs(600))
            .await?;
        anyhow::ensure!(
            done.status == RuntimeStatus::Completed,
            "transfer-{i:05} is {}: {:?}",
            done.status,
            done.failure
        );
        if let Some(TransferOutcome::Done { .. }) = done
            .output
            .as_deref()
            .and_then(|o| serde_json::from_str(o).ok())
        {
            moved += 1;
        }
    }
    let elapsed = wall.elapsed().as_secs_f64();
    let (cpu1, rss) = resources();
    // Gates: the total is conserved and, once the last unlocks ran, nothing is locked.
    let deadline = Instant::now() + Duration::from_secs(60);
    let total = loop {
        let mut total = 0;
        let mut locked = 0;
        for i in 0..accounts {
            let record = client.get_entity(&key(i)?.id().to_string()).await?;
            locked += usize::from(record.locked_by.is_some());
            let state: Account = serde_json::from_str(record.state.as_deref().unwrap_or("{}"))?;
            total += state.balance;
        }
        if locked == 0 {
            break total;
        }
        anyhow::ensure!(Instant::now() < deadline, "{locked} accounts stay locked");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    anyhow::ensure!(total == accounts * OPENING, "money not conserved: {total}");
    let stats = rt.stats();
    println!(
        "runtime: {} commits, {} turns, {} entity batches ({:.1} operations each)",
        stats.commits,
        stats.turns,
        stats.entity_batches,
        stats.entity_operations as f64 / stats.entity_batches.max(1) as f64
    );
    println!(
        "transfers N={n} among {accounts} accounts under locks: {:.0} transfers/s ({elapsed:.2} s \
         to all completed; {moved} moved money), gates: all Completed, total conserved, none \
         locked; CPU {:.1} s, max RSS {rss:.0} MiB, load {}",
        n as f64 / elapsed,
        cpu1 - cpu0,
        load_average()
    );
    rt.shutdown().await;
    Ok(())
}

async fn open_loop(rate: f64, seconds: f64, steps: u32, args: &StoreArgs) -> Result<()> {
    let (path, _dir) = fresh_db(args, "open-loop")?;
    let store = open_store(&path, durability(args)).await?;
    let rt = Runtime::start(store.clone(), registry(), options(args, &path));
    let client = rt.client();
    let n = (rate * seconds) as usize;
    let (cpu0, _) = resources();
    let mut interval = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        interval.tick().await;
        let client = client.clone();
        tasks.spawn(async move {
            let started = Instant::now();
            let id = client
                .start::<Hello>(
                    &steps,
                    StartOptions {
                        instance_id: Some(format!("open-{i:06}")),
                        ..StartOptions::default()
                    },
                )
                .await?;
            let done = client
                .wait_for_completion(&id, Duration::from_secs(120))
                .await?;
            let latency = started.elapsed().as_secs_f64() * 1000.0;
            Ok::<_, ClientError>((latency, done.status))
        });
    }
    let mut latencies = Vec::with_capacity(n);
    let mut failures = 0;
    while let Some(r) = tasks.join_next().await {
        let (latency, status) = r??;
        if status != RuntimeStatus::Completed {
            failures += 1;
        }
        latencies.push((latency * 1000.0) as i64);
    }
    latencies.sort_unstable();
    let (cpu1, rss) = resources();
    verify(&store, &client, n, steps).await?;
    let ms = |us: i64| us as f64 / 1000.0;
    println!(
        "open-loop hello-{steps} at {rate}/s for {seconds}s (n={n}): latency p50 {:.1} ms, \
         p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms; failures {failures}; CPU {:.1} s, \
         max RSS {:.0} MiB, load {}",
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.9)),
        ms(percentile(&latencies, 0.99)),
        ms(*latencies.last().unwrap_or(&0)),
        cpu1 - cpu0,
        rss,
        load_average()
    );
    rt.shutdown().await;
    Ok(())
}

async fn worker(
    path: &std::path::Path,
    n: usize,
    steps: u32,
    poison: Option<PoisonKind>,
) -> Result<()> {
    let store = open_store(path, Durability::Full).await?;
    let mut options = RuntimeOptions::default();
    if poison.is_some() {
        options.turn_journal = Some(engine::journal::beside(path));
    }
    let rt = Runtime::start(store.clone(), registry(), options);
    let client = rt.client();
    let started = Arc::new(AtomicU64::new(0));
    let mut starts = tokio::task::JoinSet::new();
    let ids: Vec<String> = (0..n).map(|i| format!("crash-{i:04}")).collect();
    for chunk in ids.chunks(n.div_ceil(32).max(1)) {
        let (client, chunk, started) = (client.clone(), chunk.to_vec(), started.clone());

        starts.spawn(async move {
            for id in chunk {
                if let Some(kind) = poison
                    && id == format!("crash-{:04}", n / 2)
                    && matches!(client.get("poison").await, Err(ClientError::NotFound(_)))
                {
                    let options = StartOptions {
                        instance_id: Some("poison".into()),
                        ..StartOptions::default()
                    };
                    if kind == PoisonKind::Turn {
                        client.start::<Poison>(&(), options).await?;
                    } else {
                        client.start::<PoisonActivity>(&(), options).await?;
                    }
                }
                match client.get(&id).await {
                    Ok(_) => continue,
                    Err(ClientError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
                let options = StartOptions {
                    instance_id: Some(id),
                    ..StartOptions::default()
                };
                client.start::<Hello>(&steps, options).await?;
                started.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, ClientError>(())
        });
    }
    while let Some(r) = starts.join_next().await {
        r??;
    }
    println!(
        "worker: started {} new instances",
        started.load(Ordering::Relaxed)
    );
    for i in 0..n {
        client
            .wait_for_completion(&format!("crash-{i:04}"), Duration::from_secs(300))
            .await?;
    }
    println!("worker: all {n} instances finished");
    rt.shutdown().await;
    Ok(())
}
