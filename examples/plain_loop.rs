//! The physical limit of the headline query: the EWMA recursion as a plain Rust loop over the
//! Arrow arrays of a Parquet file, one core, with a dense state array indexed by the (integer)
//! symbol. `benches/vs_polars.py` prints it next to the engines.
//!
//! `cargo run --release --example plain_loop -- FILE.parquet` reads `symbol` (BIGINT, small
//! non-negative integers) and `price` into memory, then times the loop alone.

use std::time::Instant;

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::{Float64Type, Int64Type};
use datafusion::prelude::{ParquetReadOptions, SessionContext};

#[tokio::main]
async fn main() -> datafusion::error::Result<()> {
    let path = std::env::args()
        .nth(1)
        .expect("usage: plain_loop FILE.parquet");
    let ctx = SessionContext::new();
    let batches = ctx
        .read_parquet(path, ParquetReadOptions::default())
        .await?
        .select_columns(&["symbol", "price"])?
        .collect()
        .await?;
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let symbols = batches
        .iter()
        .flat_map(|b| {
            b.column(0)
                .as_primitive::<Int64Type>()
                .values()
                .iter()
                .copied()
        })
        .max()
        .map_or(0, |m| m as usize + 1);
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let start = Instant::now();
        let mut state = vec![f64::NAN; symbols];
        let mut checksum = 0.0;
        for b in &batches {
            let sym = b.column(0).as_primitive::<Int64Type>().values();
            let px = b.column(1).as_primitive::<Float64Type>().values();
            let mut out = Vec::with_capacity(px.len());
            for (s, p) in sym.iter().zip(px.iter()) {
                let y = &mut state[*s as usize];
                *y = if y.is_nan() { *p } else { 0.94 * *y + 0.06 * p };
                out.push(*y);
            }
            checksum += out.iter().sum::<f64>();
        }
        std::hint::black_box(checksum);
        best = best.min(start.elapsed().as_secs_f64());
    }
    println!("{:.1} M rows/s", rows as f64 / best / 1e6);
    Ok(())
}
