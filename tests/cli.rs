//! The `fintech-sql` binary: files, commands, stdin, CSV/Parquet tables and exit codes.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn fintech_sql(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fintech-sql"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.unwrap_or("").as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const SCRIPT: &str = "
CREATE EXTERNAL TABLE ticks (ts BIGINT, symbol VARCHAR, price DOUBLE, qty DOUBLE)
STORED AS CSV LOCATION 'sql-tests/data/ticks.csv' OPTIONS ('format.has_header' 'true')
WITH ORDER (ts);
SET fintech.pipeline = 'cli';
SELECT ts, symbol, ewma(price, 0.5) OVER (PARTITION BY symbol ORDER BY ts) AS e
FROM ticks WHERE symbol = 'A' ORDER BY ts;
SELECT symbol, ewma FROM fintech_state('cli', 'ewma(price,0.5)@symbol') ORDER BY symbol;
";

#[test]
fn runs_a_command_a_file_and_stdin() {
    let out = fintech_sql(&["-c", SCRIPT], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("| 7  | A      | 31.25 |"), "{stdout}");
    // The filter on the key ran before the kernel: the state holds A alone.
    assert!(
        stdout.contains("| symbol | ewma  |\n+--------+-------+\n| A      | 31.25 |\n+"),
        "{stdout}"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("q.sql");
    std::fs::write(&file, SCRIPT).unwrap();
    let from_file = fintech_sql(&["-f", file.to_str().unwrap()], None);
    assert!(from_file.status.success());
    assert_eq!(text(&from_file.stdout), stdout);

    let from_stdin = fintech_sql(&[], Some(SCRIPT));
    assert!(from_stdin.status.success());
    assert_eq!(text(&from_stdin.stdout), stdout);
}

#[test]
fn reads_parquet() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ticks.parquet");
    let script = format!(
        "CREATE EXTERNAL TABLE csv STORED AS CSV LOCATION 'sql-tests/data/ticks.csv'
           OPTIONS ('format.has_header' 'true');
         COPY (SELECT * FROM csv) TO '{p}' STORED AS PARQUET;
         CREATE EXTERNAL TABLE pq STORED AS PARQUET LOCATION '{p}';
         SELECT symbol, v FROM (SELECT ts, symbol,
           vwap(price, qty) OVER (PARTITION BY symbol ORDER BY ts) AS v FROM pq) WHERE ts = 8;",
        p = path.display()
    );
    let out = fintech_sql(&["-c", &script], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // B: (100*2 + 110*1 + 90*4) / 7
    let v = (100.0 * 2.0 + 110.0 + 90.0 * 4.0) / 7.0;
    assert!(
        text(&out.stdout).contains(&format!("| B      | {v} |")),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn errors_go_to_stderr_with_a_failing_exit_code() {
    let out = fintech_sql(
        &[
            "-c",
            "SELECT 1; SELECT ewma(1.0, 7) OVER (ORDER BY 1); SELECT 2",
        ],
        None,
    );
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("alpha must be in (0, 1], got 7"),
        "{stderr}"
    );
    // Statements before the error ran, the ones after did not.
    assert!(text(&out.stdout).contains("Int64(1)"));
    assert!(!text(&out.stdout).contains("Int64(2)"));

    let bad = fintech_sql(&["-x"], None);
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad.stderr).contains("usage"));
}
