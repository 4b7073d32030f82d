//! `fintech-sql`: run SQL with datafusion-fintech registered.
//!
//! ```text
//! fintech-sql -f queries.sql      run a file
//! fintech-sql -c "SELECT 1"       run a command
//! fintech-sql < queries.sql       run standard input
//! fintech-sql --timing -c "..."   also print each statement's rows and time to stderr
//! ```
//! Statements run in order and their results print as tables. The first error is printed to
//! stderr and the exit code is 1.

use std::io::Read;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::util::pretty::pretty_format_batches_with_schema;
use datafusion::error::{DataFusionError, Result};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::DFParser;

const USAGE: &str = "usage: fintech-sql [--timing] [-f FILE | -c SQL]   (no file or command: \
    read SQL from stdin; --timing: print each statement's rows and time to stderr)";

/// The SQL to run, and whether to print timings.
fn read_input() -> std::result::Result<(String, bool), String> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let timing = args.iter().any(|a| a == "--timing");
    args.retain(|a| a != "--timing");
    read_sql(&args).map(|sql| (sql, timing))
}

fn read_sql(args: &[String]) -> std::result::Result<String, String> {
    match args {
        [] => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| format!("cannot read stdin: {e}"))?;
            Ok(s)
        }
        [flag, file] if flag == "-f" => {
            std::fs::read_to_string(file).map_err(|e| format!("cannot read {file}: {e}"))
        }
        [flag, sql] if flag == "-c" => Ok(sql.clone()),
        [flag] if flag == "-h" || flag == "--help" => Err(USAGE.to_string()),
        _ => Err(format!("bad arguments\n{USAGE}")),
    }
}

async fn run(sql: &str, timing: bool) -> Result<()> {
    let config = SessionConfig::new().with_information_schema(true);
    let ctx = SessionContext::new_with_config(config);
    datafusion_fintech::register_all(&ctx)?;
    let statements = DFParser::parse_sql(sql)?;
    for statement in statements {
        let start = Instant::now();
        let state = ctx.state();
        let plan = state.statement_to_plan(statement).await?;
        let df = ctx.execute_logical_plan(plan).await?;
        let schema = Arc::new(df.schema().as_arrow().clone());
        let batches = df.collect().await?;
        if timing {
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            eprintln!("-- {rows} row(s) in {:.3} s", start.elapsed().as_secs_f64());
        }
        // Statements (SET, CREATE, ...) have no columns; a query with no rows prints its header.
        if !schema.fields().is_empty() {
            println!("{}", pretty_format_batches_with_schema(schema, &batches)?);
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let (sql, timing) = match read_input() {
        Ok(input) => input,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match run(&sql, timing).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let e = match e {
                DataFusionError::Context(_, inner) => *inner,
                e => e,
            };
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
