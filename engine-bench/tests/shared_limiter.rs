//! Acceptance for shared limiters: two processes on one PostgreSQL database share one GCRA
//! limiter for 30 s and together stay within 5 % of its rate, with at most one store write per
//! 50 admissions. The benchmark program checks both and exits non-zero otherwise; this runs it.
//! Needs a server: `cargo xtask test` starts one and sets `SWITCHYARD_TEST_POSTGRES_URL`.

use std::process::Command;

#[test]
#[ignore = "needs PostgreSQL; `cargo xtask test` provides it"]
fn two_processes_share_one_limiter_within_five_percent_of_its_rate() {
    let url = std::env::var("SWITCHYARD_TEST_POSTGRES_URL").expect(
        "SWITCHYARD_TEST_POSTGRES_URL is not set: run `cargo xtask test`, which starts PostgreSQL",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_engine-bench"))
        .args(["shared-limiter", "--database-url", &url])
        .args(["--processes", "2", "--seconds", "30", "--rate", "500"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("2 processes on one database"), "{stdout}");
}
