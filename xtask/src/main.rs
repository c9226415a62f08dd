//! Build and test automation for Switchyard, run as `cargo xtask <command>`.
//!
//! It replaces cargo-leptos (slow to install here, and its bindgen step downloads a binary) with
//! the same pipeline done by hand: build the `app` crate for `wasm32-unknown-unknown` with the
//! `hydrate` feature, run wasm-bindgen in-process through the `wasm-bindgen-cli-support` library
//! (whose version must equal the `wasm-bindgen` in Cargo.lock; checked below), copy the stylesheet
//! and `public/` into the site folder, then build and run the server.
//!
//! Commands:
//! - `serve [--release] [-- <server flags>]`: build everything and run the server on
//!   http://127.0.0.1:3000 with SQLite under `data/`.
//! - `build [--release]`: build the site and the server without running it.
//! - `test`: every check CI runs: fmt, clippy, the wasm and pure-core dependency invariants, unit and integration
//!   tests, then the Playwright suite in Debian Chromium against a freshly built server.
//! - `e2e`: only the build and the Playwright suite.
//!
//! Missing prerequisites are installed where that is possible without downloading anything but
//! registry packages (the wasm target via rustup, Debian's chromium as root, `npm ci`); otherwise
//! the command stops with a message that says what to install.

use std::{
    env,
    ffi::OsString,
    fs,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    time::Instant,
};

use anyhow::{Context, Result, bail, ensure};

const WASM_TARGET: &str = "wasm32-unknown-unknown";
/// Must match `output-name` in `[[workspace.metadata.leptos]]` and `LEPTOS_OUTPUT_NAME`.
const OUTPUT_NAME: &str = "app";
/// The version of the linked `wasm-bindgen-cli-support`, pinned with `=` in Cargo.toml.
const BINDGEN_VERSION: &str = "0.2.130";
const CHROMIUM: &str = "/usr/bin/chromium";
/// Crates that must never be part of the browser bundle.
const SERVER_ONLY_CRATES: &[&str] = &[
    "sqlx",
    "axum",
    "tokio",
    "engine",
    "leptos_axum",
    "hyper",
    "utoipa",
];

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let mut args: Vec<String> = env::args().skip(1).collect();
    let passthrough = match args.iter().position(|a| a == "--") {
        Some(i) => {
            let rest = args.split_off(i);
            rest[1..].to_vec()
        }
        None => Vec::new(),
    };
    let command = args.first().cloned().unwrap_or_default();
    let release = args.iter().any(|a| a == "--release");
    if let Some(unknown) = args.iter().skip(1).find(|a| *a != "--release") {
        bail!("unknown option {unknown:?} for `cargo xtask {command}`; see `cargo xtask help`");
    }
    let root = workspace_root()?;
    env::set_current_dir(&root)?;
    let profile = if release {
        Profile::Release
    } else {
        Profile::Dev
    };
    match command.as_str() {
        "serve" => {
            build(profile)?;
            serve(profile, &passthrough)
        }
        "build" => build(profile),
        "test" => test_all(),
        "e2e" => {
            build(Profile::Dev)?;
            e2e()
        }
        "" | "help" | "--help" | "-h" => {
            println!("{}", HELP.trim());
            Ok(())
        }
        other => bail!("unknown command {other:?}; see `cargo xtask help`"),
    }
}

const HELP: &str = "
cargo xtask serve [--release] [-- <server flags>]   build and serve on http://127.0.0.1:3000
cargo xtask build [--release]                       build the site and the server
cargo xtask test                                    run every check and test (what CI runs)
cargo xtask e2e                                     build and run only the Playwright suite
";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Profile {
    Dev,
    Release,
}

impl Profile {
    /// Cargo's profile for the server build and its output folder name.
    fn server(self) -> (&'static str, &'static str) {
        match self {
            Profile::Dev => ("dev", "debug"),
            Profile::Release => ("release", "release"),
        }
    }
    /// Cargo's profile for the wasm build and its output folder name.
    fn wasm(self) -> (&'static str, &'static str) {
        match self {
            Profile::Dev => ("dev", "debug"),
            Profile::Release => ("wasm-release", "wasm-release"),
        }
    }
}

fn workspace_root() -> Result<PathBuf> {
    let manifest = env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .context("run this through `cargo xtask`")?;
    Ok(manifest
        .parent()
        .context("xtask lives one folder below the workspace root")?
        .to_path_buf())
}

fn cargo() -> Command {
    Command::new(env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo")))
}

/// Runs a command, echoing it, and fails with its name if it fails.
fn run_cmd(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}").replace('"', "");
    eprintln!("xtask: $ {shown}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {shown}"))?;
    ensure!(status.success(), "`{shown}` failed ({status})");
    Ok(())
}

fn step<T>(name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let started = Instant::now();
    eprintln!("xtask: ── {name}");
    let out = f().with_context(|| format!("step failed: {name}"))?;
    eprintln!(
        "xtask: ── {name}: done in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(out)
}

/// Builds the browser bundle into `<target>/site` and the server binary (`<target>` is
/// `CARGO_TARGET_DIR` or `target`).
fn build(profile: Profile) -> Result<()> {
    step("wasm target", ensure_wasm_target)?;
    step("bindgen version check", check_bindgen_version)?;
    let wasm = step("build browser bundle (wasm32, hydrate)", || {
        build_wasm(profile)
    })?;
    step("wasm-bindgen", || bindgen(&wasm))?;
    step("copy style and public assets", copy_assets)?;
    step("fingerprint the bundle", fingerprint)?;
    step("build server", || {
        run_cmd(
            cargo()
                .args(["build", "--package", "server", "--bin", "switchyard"])
                .args(["--profile", profile.server().0]),
        )
    })
}

/// Cargo's target folder: `CARGO_TARGET_DIR` when set (relative to the workspace root, like
/// cargo), else `target`.
fn target_dir() -> PathBuf {
    env::var_os("CARGO_TARGET_DIR")
        .filter(|dir| !dir.is_empty())
        .map_or_else(|| PathBuf::from("target"), PathBuf::from)
}

fn site_root() -> PathBuf {
    target_dir().join("site")
}

fn ensure_wasm_target() -> Result<()> {
    let out = Command::new("rustc")
        .args(["--print", "target-libdir", "--target", WASM_TARGET])
        .output()
        .context("cannot run rustc")?;
    let libdir = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if out.status.success() && Path::new(&libdir).is_dir() {
        return Ok(());
    }
    eprintln!("xtask: the {WASM_TARGET} target is missing; installing it with rustup");
    run_cmd(Command::new("rustup").args(["target", "add", WASM_TARGET]))
        .context("install it by hand with `rustup target add wasm32-unknown-unknown`")
}

/// The wasm-bindgen schema must match exactly between the `wasm-bindgen` macro crate compiled
/// into the bundle and the bindgen library that post-processes it.
fn check_bindgen_version() -> Result<()> {
    let lock = fs::read_to_string("Cargo.lock").context("cannot read Cargo.lock")?;
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line == "name = \"wasm-bindgen\"" {
            let version = lines
                .next()
                .and_then(|l| l.strip_prefix("version = \""))
                .and_then(|l| l.strip_suffix('"'))
                .context("Cargo.lock: no version after wasm-bindgen")?;
            ensure!(
                version == BINDGEN_VERSION,
                "Cargo.lock has wasm-bindgen {version} but xtask links wasm-bindgen-cli-support \
                 {BINDGEN_VERSION}: pin both to the same version in Cargo.toml and update \
                 BINDGEN_VERSION in xtask"
            );
            return Ok(());
        }
    }
    bail!("Cargo.lock does not mention wasm-bindgen")
}

fn build_wasm(profile: Profile) -> Result<PathBuf> {
    let (cargo_profile, dir) = profile.wasm();
    run_cmd(
        cargo()
            .args([
                "build",
                "--package",
                "app",
                "--lib",
                "--target",
                WASM_TARGET,
            ])
            .args(["--no-default-features", "--features", "hydrate"])
            .args(["--profile", cargo_profile])
            // A separate target folder keeps the wasm build from evicting the server's artifacts.
            .arg("--target-dir")
            .arg(target_dir().join("wasm")),
    )?;
    let wasm = target_dir()
        .join("wasm")
        .join(WASM_TARGET)
        .join(dir)
        .join(format!("{OUTPUT_NAME}.wasm"));
    ensure!(
        wasm.is_file(),
        "expected {} after the build",
        wasm.display()
    );
    Ok(wasm)
}

fn bindgen(wasm: &Path) -> Result<()> {
    let pkg = site_root().join("pkg");
    fs::create_dir_all(&pkg)?;
    wasm_bindgen_cli_support::Bindgen::new()
        .input_path(wasm)
        .out_name(OUTPUT_NAME)
        .web(true)?
        .typescript(false)
        .generate(&pkg)
        .context("wasm-bindgen failed")?;
    // `<HydrationScripts/>` loads `<name>.wasm` when LEPTOS_OUTPUT_NAME is set at compile time
    // (cargo-leptos' naming), not wasm-bindgen's `<name>_bg.wasm`. A mismatch fails silently: the
    // page renders but never hydrates.
    fs::rename(
        pkg.join(format!("{OUTPUT_NAME}_bg.wasm")),
        pkg.join(format!("{OUTPUT_NAME}.wasm")),
    )
    .context("wasm-bindgen did not write the expected _bg.wasm file")?;
    ensure!(
        pkg.join(format!("{OUTPUT_NAME}.js")).is_file(),
        "wasm-bindgen did not write {OUTPUT_NAME}.js"
    );
    Ok(())
}

fn copy_assets() -> Result<()> {
    let site = site_root();
    fs::copy(
        "style/main.css",
        site.join("pkg").join(format!("{OUTPUT_NAME}.css")),
    )
    .context("cannot copy style/main.css")?;
    copy_dir(Path::new("public"), &site)
}

/// Gives the script, the wasm and the stylesheet content-hashed names (`app.<hash>.js`, …) so the
/// server can let browsers keep them for a year, and writes `hash.txt` in the site root, the file
/// Leptos' `<HydrationScripts/>` and `<HashedStylesheet/>` read the hashes from. The plain names
/// stay for the sign-in pages and a server started without the hash file. Older fingerprinted
/// copies are removed.
fn fingerprint() -> Result<()> {
    use sha2::{Digest, Sha256};
    let site = site_root();
    let pkg = site.join("pkg");
    for entry in fs::read_dir(&pkg)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let mut parts = name.split('.');
        if parts.next() == Some(OUTPUT_NAME)
            && parts
                .next()
                .is_some_and(|h| h.len() == HASH_CHARS && h.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            fs::remove_file(&path)?;
        }
    }
    let mut lines = String::new();
    for (key, ext) in [("js", "js"), ("wasm", "wasm"), ("css", "css")] {
        let plain = pkg.join(format!("{OUTPUT_NAME}.{ext}"));
        let bytes = fs::read(&plain).with_context(|| format!("cannot read {}", plain.display()))?;
        let hash: String = Sha256::digest(&bytes)
            .iter()
            .take(HASH_CHARS / 2)
            .map(|b| format!("{b:02x}"))
            .collect();
        let hashed = pkg.join(format!("{OUTPUT_NAME}.{hash}.{ext}"));
        fs::write(&hashed, &bytes)?;
        precompress(&hashed, &bytes)?;
        lines.push_str(&format!("{key}: {hash}\n"));
    }
    fs::write(site.join("hash.txt"), lines)?;
    Ok(())
}

/// Writes `<file>.br` and `<file>.gz` beside `file`, which the server sends to browsers that
/// accept them: compressed once here instead of on every first load.
fn precompress(file: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let mut br = Vec::new();
    {
        // Quality 9 of 11: close to the best ratio at a fraction of the time on large files.
        let mut w = brotli::CompressorWriter::new(&mut br, 1 << 16, 9, 22);
        w.write_all(bytes)?;
    }
    fs::write(file.with_file_name(format!("{name}.br")), br)?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(bytes)?;
    fs::write(file.with_file_name(format!("{name}.gz")), gz.finish()?)?;
    Ok(())
}

/// Hex characters in a fingerprint (the server recognises fingerprinted names by this length).
const HASH_CHARS: usize = 16;

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from).with_context(|| format!("cannot read {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

fn server_binary(profile: Profile) -> PathBuf {
    target_dir().join(profile.server().1).join("switchyard")
}

fn serve(profile: Profile, server_args: &[String]) -> Result<()> {
    let mut cmd = Command::new(server_binary(profile));
    cmd.arg("--site-root").arg(site_root()).args(server_args);
    // The server handles SIGINT itself and shuts down gracefully; xtask just waits for it.
    run_cmd(&mut cmd)
}

fn test_all() -> Result<()> {
    let started = Instant::now();
    step("format check", || {
        run_cmd(cargo().args(["fmt", "--all", "--check"]))
    })?;
    step("clippy (server build)", || {
        run_cmd(cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))
    })?;
    step("wasm target", ensure_wasm_target)?;
    step(
        "browser bundle has no server-only crates",
        check_wasm_dependencies,
    )?;
    step("engine core is pure (no tokio, no sqlx)", check_core_purity)?;
    let postgres_url = step("postgresql for the backend tests", ensure_postgres)?;
    step("unit and integration tests (SQLite and PostgreSQL)", || {
        // The PostgreSQL tests are `#[ignore]`d so that a bare `cargo test` reports them as not
        // run; here the database exists, so every test runs.
        run_cmd(
            cargo()
                .args(["test", "--workspace", "--", "--include-ignored"])
                .env("SWITCHYARD_TEST_POSTGRES_URL", &postgres_url),
        )
    })?;
    build(Profile::Dev)?;
    e2e()?;
    eprintln!(
        "xtask: all checks passed in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Architecture invariant: the `hydrate` build of `app` depends on none of the server crates.
fn check_wasm_dependencies() -> Result<()> {
    let tree = dependency_tree(&[
        "--package",
        "app",
        "--target",
        WASM_TARGET,
        "--no-default-features",
        "--features",
        "hydrate",
    ])?;
    forbid("the browser bundle", &tree, SERVER_ONLY_CRATES)
}

/// Crates the engine's pure core must not reach: it does no I/O, reads no clock, spawns nothing.
const IMPURE_CRATES: &[&str] = &["sqlx", "tokio", "engine", "tracing", "mio", "libc"];

/// Architecture invariant: `engine-core` (history, registry, context, executor, rewind) is pure.
fn check_core_purity() -> Result<()> {
    let tree = dependency_tree(&["--package", "engine-core"])?;
    forbid("the engine's pure core", &tree, IMPURE_CRATES)
}

/// The names of every crate in a normal-edges `cargo tree` of `args`.
fn dependency_tree(args: &[&str]) -> Result<Vec<String>> {
    let out = cargo()
        .arg("tree")
        .args(args)
        .args(["--edges", "normal", "--prefix", "none", "--format", "{p}"])
        .output()
        .context("cannot run cargo tree")?;
    ensure!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect())
}

fn forbid(what: &str, tree: &[String], forbidden: &[&str]) -> Result<()> {
    let found: Vec<&str> = forbidden
        .iter()
        .copied()
        .filter(|name| tree.iter().any(|crate_name| crate_name == name))
        .collect();
    ensure!(found.is_empty(), "{what} depends on {found:?}");
    eprintln!(
        "xtask: {what}: {} crates, none of {forbidden:?}",
        tree.len()
    );
    Ok(())
}

fn e2e() -> Result<()> {
    step("chromium", ensure_chromium)?;
    step("npm ci (end2end)", ensure_node_modules)?;
    step("playwright", || {
        let server = env::current_dir()?.join(server_binary(Profile::Dev));
        let site = env::current_dir()?.join(site_root());
        run_cmd(
            Command::new("npx")
                .args(["--no-install", "playwright", "test"])
                .current_dir("end2end")
                .env("SWITCHYARD_BIN", server)
                .env("SWITCHYARD_SITE_ROOT", site)
                .env("CHROMIUM_PATH", CHROMIUM),
        )
    })
}

/// A fresh, empty PostgreSQL database for the tests, as a URL. Uses
/// `SWITCHYARD_TEST_POSTGRES_URL` when set; otherwise, as root, installs (Debian's `postgresql`),
/// starts the local cluster and recreates the `switchyard_test` database.
fn ensure_postgres() -> Result<String> {
    if let Ok(url) = env::var("SWITCHYARD_TEST_POSTGRES_URL") {
        eprintln!("xtask: using PostgreSQL from SWITCHYARD_TEST_POSTGRES_URL");
        return Ok(url);
    }
    if !is_root() {
        bail!(
            "the PostgreSQL tests need a server: set SWITCHYARD_TEST_POSTGRES_URL to an empty \
             database, or run as root so xtask can start the local cluster"
        );
    }
    if which("pg_lsclusters").is_err() {
        eprintln!("xtask: installing Debian's postgresql");
        run_cmd(Command::new("apt-get").args(["update", "-qq"]))?;
        run_cmd(
            Command::new("apt-get")
                .args(["install", "-y", "-qq", "postgresql"])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
    }
    let clusters = Command::new("pg_lsclusters").arg("-h").output()?;
    let listing = String::from_utf8_lossy(&clusters.stdout);
    let fields: Vec<&str> = listing
        .lines()
        .next()
        .context("pg_lsclusters lists no cluster: create one with `pg_createcluster 15 main`")?
        .split_whitespace()
        .collect();
    let [version, name, port, status, ..] = fields[..] else {
        bail!("unexpected pg_lsclusters output: {listing}");
    };
    if status != "online" {
        run_cmd(Command::new("pg_ctlcluster").args([version, name, "start"]))?;
    }
    let psql = |sql: &str| {
        run_cmd(
            Command::new("runuser")
                .args(["-u", "postgres", "--", "psql", "-q", "-p", port])
                .args(["-v", "ON_ERROR_STOP=1", "-c", sql]),
        )
    };
    psql(
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'switchyard_test') \
         THEN CREATE ROLE switchyard_test LOGIN PASSWORD 'switchyard_test'; END IF; END $$;",
    )?;
    psql("DROP DATABASE IF EXISTS switchyard_test WITH (FORCE)")?;
    psql("CREATE DATABASE switchyard_test OWNER switchyard_test")?;
    Ok(format!(
        "postgres://switchyard_test:switchyard_test@127.0.0.1:{port}/switchyard_test"
    ))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Debian's chromium; never a browser download.
fn ensure_chromium() -> Result<()> {
    if Path::new(CHROMIUM).is_file() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "{CHROMIUM} is missing: install Debian's chromium (`sudo apt-get install -y chromium`)"
        );
    }
    eprintln!("xtask: installing Debian's chromium");
    run_cmd(Command::new("apt-get").args(["update", "-qq"]))?;
    run_cmd(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "chromium"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    ensure!(
        Path::new(CHROMIUM).is_file(),
        "apt-get did not install {CHROMIUM}"
    );
    Ok(())
}

fn ensure_node_modules() -> Result<()> {
    which("npm")
        .context("npm is missing: install Node.js 20+ and npm (`apt-get install -y npm`)")?;
    let lock = Path::new("end2end/package-lock.json");
    let installed = Path::new("end2end/node_modules/.package-lock.json");
    let fresh = match (fs::metadata(lock), fs::metadata(installed)) {
        (Ok(l), Ok(i)) => i.modified()? >= l.modified()?,
        _ => false,
    };
    if fresh {
        return Ok(());
    }
    run_cmd(
        Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir("end2end")
            // @playwright/test must not fetch its own browsers: we use Debian's chromium.
            .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1"),
    )
}

fn which(program: &str) -> Result<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .with_context(|| format!("{program} not found on PATH"))
}
