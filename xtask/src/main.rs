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
//! - `bench-load [--release]`: the page-load benchmark: Chromium throttled to 20 Mbit/s and
//!   40 ms round trips loads the overview cold three times and prints the hydration times.
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
/// Cargo's size-optimised profile for the browser bundle (Cargo.toml).
const WASM_PROFILE: &str = "wasm-release";
/// `cargo xtask test` fails when the served wasm is larger than this once gzipped.
const WASM_GZIP_BUDGET: u64 = 400 * 1024;
/// The npm package with the build's node tools (binaryen's wasm-opt).
const BUILD_TOOLS: &str = "xtask/npm";
/// The Playwright suite's npm package.
const END2END: &str = "end2end";
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
        "build" => build(profile).map(drop),
        "test" => test_all(),
        "e2e" => {
            build(Profile::Dev)?;
            e2e()
        }
        "bench-load" => {
            build(profile)?;
            bench_load(profile)
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
cargo xtask bench-load [--release]                  the throttled page-load benchmark (prints figures)
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
fn build(profile: Profile) -> Result<BundleSize> {
    step("wasm target", ensure_wasm_target)?;
    step("bindgen version check", check_bindgen_version)?;
    let wasm = step(
        "build browser bundle (wasm32, hydrate, size-optimised)",
        build_wasm,
    )?;
    step("npm ci (build tools)", || npm_ci(BUILD_TOOLS))?;
    let bundle = step("split, bind, optimise and fingerprint the bundle", || {
        make_bundle(&wasm)
    })?;
    eprintln!("xtask: {bundle}");
    step("copy public assets", copy_assets)?;
    step("build server", || {
        run_cmd(
            cargo()
                .args(["build", "--package", "server", "--bin", "switchyard"])
                .args(["--profile", profile.server().0]),
        )
    })?;
    Ok(bundle)
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

/// The browser bundle is always built with the size-optimised profile: it is what the serve
/// command ships, and what the test command measures against [`WASM_GZIP_BUDGET`].
fn build_wasm() -> Result<PathBuf> {
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
            .args(["--profile", WASM_PROFILE])
            // A separate target folder keeps the wasm build from evicting the server's artifacts.
            .arg("--target-dir")
            .arg(target_dir().join("wasm")),
    )?;
    let wasm = target_dir()
        .join("wasm")
        .join(WASM_TARGET)
        .join(WASM_PROFILE)
        .join(format!("{OUTPUT_NAME}.wasm"));
    ensure!(
        wasm.is_file(),
        "expected {} after the build",
        wasm.display()
    );
    Ok(wasm)
}

/// The link module the split chunks are loaded through. Leptos' `<HydrationScripts/>` looks for
/// exactly this name (22 underscores) when file hashing is off: the folder is what is hashed.
const SPLIT_LINK: &str = "__wasm_split.______________________.js";
/// The split manifest Leptos reads at render time to preload the current page's chunks.
const SPLIT_MANIFEST: &str = "__wasm_split_manifest.json";

/// Turns the linked wasm into the served bundle, in a folder named after its content's hash
/// (`<target>/site/pkg/<hash>/`), which browsers may keep forever:
/// 1. split it at the lazy routes into a main module and per-page chunks (plus chunks of code
///    several pages share), with the link module and the manifest that load them;
/// 2. run wasm-bindgen on the main module;
/// 3. shrink every module with binaryen's `wasm-opt -Oz` from npm (Debian's binaryen 108 breaks
///    hydration: `WebAssembly.Table.set(): Argument 1 is invalid`);
/// 4. add the stylesheet, hash the folder, precompress every file (brotli, gzip) so the server
///    sends them without compressing on the fly, and record the folder in `site/build.txt`.
///
/// Older bundle folders are removed. Returns the sizes the budget is checked against.
fn make_bundle(wasm: &Path) -> Result<BundleSize> {
    let pkg = site_root().join("pkg");
    let stage = pkg.join(".staging");
    if stage.exists() {
        fs::remove_dir_all(&stage)?;
    }
    fs::create_dir_all(&stage)?;
    let input = fs::read(wasm).with_context(|| format!("cannot read {}", wasm.display()))?;
    let split_main = stage.join(format!("{OUTPUT_NAME}_split.wasm"));
    let main_module = format!("./{OUTPUT_NAME}.js");
    let link = format!("./{SPLIT_LINK}");
    let split = wasm_split_cli_support::transform({
        let mut options = wasm_split_cli_support::Options::new(&input);
        options.output_dir = &stage;
        options.main_out_path = &split_main;
        options.main_module = &main_module;
        options.link_name = &link;
        options
    })
    .map_err(|e| anyhow::anyhow!("{e:?}"))
    .context("wasm-split failed")?;
    let manifest: std::collections::BTreeMap<_, _> = split.prefetch_map.into_iter().collect();
    fs::write(
        stage.join(SPLIT_MANIFEST),
        serde_json::to_string_pretty(&manifest)?,
    )?;

    wasm_bindgen_cli_support::Bindgen::new()
        .input_path(&split_main)
        .out_name(OUTPUT_NAME)
        .web(true)?
        .typescript(false)
        // The chunks call into the main module through the linker's exports, by their names.
        .keep_lld_exports(true)
        .demangle(false)
        .generate(&stage)
        .context("wasm-bindgen failed")?;
    fs::remove_file(&split_main)?;
    // `<HydrationScripts/>` loads `<name>.wasm` when LEPTOS_OUTPUT_NAME is set at compile time
    // (cargo-leptos' naming), not wasm-bindgen's `<name>_bg.wasm`. A mismatch fails silently: the
    // page renders but never hydrates.
    fs::rename(
        stage.join(format!("{OUTPUT_NAME}_bg.wasm")),
        stage.join(format!("{OUTPUT_NAME}.wasm")),
    )
    .context("wasm-bindgen did not write the expected _bg.wasm file")?;

    let modules: Vec<PathBuf> = sorted_files(&stage)?
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "wasm"))
        .collect();
    optimise_all(&modules)?;
    fs::copy("style/main.css", stage.join(format!("{OUTPUT_NAME}.css")))
        .context("cannot copy style/main.css")?;
    let files = sorted_files(&stage)?;

    let id = {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        for file in &files {
            hasher.update(file.file_name().unwrap_or_default().as_encoded_bytes());
            hasher.update(fs::read(file)?);
        }
        hex(&hasher.finalize()[..BUILD_ID_CHARS / 2])
    };
    let dest = pkg.join(&id);
    if dest.exists() {
        fs::remove_dir_all(&dest)?;
    }
    fs::rename(&stage, &dest)?;
    for entry in fs::read_dir(&pkg)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if path.is_dir() && name != id && is_build_id(name) {
            fs::remove_dir_all(&path)?;
        } else if path.is_file() {
            // Loose files from older builds (the bundle used to sit directly in `pkg/`).
            fs::remove_file(&path)?;
        }
    }

    let mut gzipped = std::collections::BTreeMap::new();
    for file in sorted_files(&dest)? {
        let (_, gz) = precompress(&file)?;
        let stem = file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        gzipped.insert(stem, gz);
    }
    fs::write(site_root().join("build.txt"), format!("{id}\n"))?;
    // `hash.txt` named the hashes of an older layout.
    let _ = fs::remove_file(site_root().join("hash.txt"));
    // The stylesheet also under its plain name, for the sign-in pages outside the app.
    fs::copy("style/main.css", pkg.join(format!("{OUTPUT_NAME}.css")))?;

    let wasm_gz = |stem: &str| gzipped.get(&format!("{stem}.wasm")).copied().unwrap_or(0);
    let main = wasm_gz(OUTPUT_NAME);
    let (largest_page, largest) = manifest
        .iter()
        .filter(|(split, _)| split.contains("_pages_"))
        .map(|(split, stems)| {
            (
                split.clone(),
                main + stems.iter().map(|s| wasm_gz(s)).sum::<u64>(),
            )
        })
        .max_by_key(|(_, size)| *size)
        .unwrap_or_default();
    Ok(BundleSize {
        id,
        main,
        total: gzipped
            .iter()
            .filter(|(name, _)| name.ends_with(".wasm"))
            .map(|(_, size)| size)
            .sum(),
        chunks: gzipped.keys().filter(|n| n.ends_with(".wasm")).count() - 1,
        largest_page,
        largest,
    })
}

/// The files directly in `dir`, by name.
fn sorted_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Shrinks the modules in place with binaryen's `wasm-opt -Oz` from npm, one process per core at
/// a time (most of the time is node starting up: the chunks are small).
fn optimise_all(modules: &[PathBuf]) -> Result<()> {
    let workers = std::thread::available_parallelism().map_or(2, usize::from);
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(module) = modules.get(i) else {
                            return Ok(());
                        };
                        optimise_wasm(module)?;
                    }
                })
            })
            .collect();
        handles.into_iter().try_for_each(|h| {
            h.join()
                .map_err(|_| anyhow::anyhow!("wasm-opt worker panicked"))?
        })
    })?;
    eprintln!("xtask: wasm-opt -Oz: {} modules", modules.len());
    Ok(())
}

/// Shrinks one wasm module in place (quietly: binaryen warns about name subsections it does not
/// know, which the splitter leaves and `--strip-debug` drops).
fn optimise_wasm(module: &Path) -> Result<()> {
    let out = Command::new(Path::new(BUILD_TOOLS).join("node_modules/.bin/wasm-opt"))
        .arg(module)
        .arg("-o")
        .arg(module)
        .args(["-Oz", "--strip-debug", "--strip-producers"])
        .args(["--enable-bulk-memory", "--enable-nontrapping-float-to-int"])
        .output()
        .context("cannot run wasm-opt")?;
    ensure!(
        out.status.success(),
        "wasm-opt failed on {}: {}",
        module.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex characters in a bundle folder's name (the server recognises bundle folders by it).
const BUILD_ID_CHARS: usize = 16;

fn is_build_id(name: &str) -> bool {
    name.len() == BUILD_ID_CHARS && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Writes `<file>.br` and `<file>.gz` beside `file`, which the server sends to browsers that
/// accept them: compressed once here instead of on every first load. Returns their sizes (brotli,
/// gzip).
fn precompress(file: &Path) -> Result<(u64, u64)> {
    use std::io::Write;
    let bytes = fs::read(file)?;
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let mut br = Vec::new();
    {
        // Quality 9 of 11: close to the best ratio at a fraction of the time on large files.
        let mut w = brotli::CompressorWriter::new(&mut br, 1 << 16, 9, 22);
        w.write_all(&bytes)?;
    }
    fs::write(file.with_file_name(format!("{name}.br")), &br)?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&bytes)?;
    let gz = gz.finish()?;
    fs::write(file.with_file_name(format!("{name}.gz")), &gz)?;
    Ok((br.len() as u64, gz.len() as u64))
}

/// What the budget is about: the wasm a first visit downloads, gzipped.
#[derive(Default, Clone)]
struct BundleSize {
    /// The bundle folder's name.
    id: String,
    /// The main module (every page needs it).
    main: u64,
    /// Every module together.
    total: u64,
    /// How many modules besides the main one.
    chunks: usize,
    /// The page whose first visit downloads the most wasm, and how much (main module included).
    largest_page: String,
    largest: u64,
}

impl std::fmt::Display for BundleSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kb = |b: u64| b as f64 / 1024.0;
        write!(
            f,
            "bundle {}: main wasm {:.0} KB gzipped; a first visit loads at most {:.0} KB \
             ({}; budget {:.0} KB); {} chunks, {:.0} KB for every page together",
            self.id,
            kb(self.main),
            kb(self.largest),
            self.largest_page,
            kb(WASM_GZIP_BUDGET),
            self.chunks,
            kb(self.total)
        )
    }
}

fn copy_assets() -> Result<()> {
    copy_dir(Path::new("public"), &site_root())
}

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
    let bundle = build(Profile::Dev)?;
    step("browser bundle size budget", || {
        ensure!(
            bundle.largest <= WASM_GZIP_BUDGET,
            "the {bundle}: over budget. Look for a new dependency in the `hydrate` build \
             (`cargo tree -p app --target wasm32-unknown-unknown --features hydrate`)"
        );
        eprintln!("xtask: {bundle}: within budget");
        Ok(())
    })?;
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

/// Runs `end2end/bench` with its own Playwright configuration against the server of `profile`.
fn bench_load(profile: Profile) -> Result<()> {
    step("chromium", ensure_chromium)?;
    step("npm ci (end2end)", || npm_ci(END2END))?;
    step("load benchmark", || {
        let server = env::current_dir()?.join(server_binary(profile));
        let site = env::current_dir()?.join(site_root());
        run_cmd(
            Command::new("npx")
                .args(["--no-install", "playwright", "test"])
                .args(["--config", "playwright.bench.config.ts"])
                .current_dir(END2END)
                .env("SWITCHYARD_BIN", server)
                .env("SWITCHYARD_SITE_ROOT", site)
                .env("CHROMIUM_PATH", CHROMIUM),
        )
    })
}

fn e2e() -> Result<()> {
    step("chromium", ensure_chromium)?;
    step("npm ci (end2end)", || npm_ci(END2END))?;
    step("playwright", || {
        let server = env::current_dir()?.join(server_binary(Profile::Dev));
        let site = env::current_dir()?.join(site_root());
        run_cmd(
            Command::new("npx")
                .args(["--no-install", "playwright", "test"])
                .current_dir(END2END)
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

/// `npm ci` in `dir` unless its `node_modules` is at least as new as its lockfile.
fn npm_ci(dir: &str) -> Result<()> {
    which("npm")
        .context("npm is missing: install Node.js 20+ and npm (`apt-get install -y npm`)")?;
    let dir = Path::new(dir);
    let lock = dir.join("package-lock.json");
    let installed = dir.join("node_modules/.package-lock.json");
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
            .current_dir(dir)
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
